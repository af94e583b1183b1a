"""What the demo owes the person trying it: a database it may use, and the environment to copy.

Two duties kept apart from the run itself (``devstack.demo``):

- **Refusing a database it did not fill.** The demo's workers and beat take every refund that comes
  due in their Redis database, not only the demo's: pointed (``REDIS_URL``) at a database that holds
  someone's refunds, they would call the sandbox for each of them, where none is pending, and leave
  them all in ``needs_attention``. So before anything starts, a database holding any reference the
  demo did not create (its references are ``demo-<run>-<n>``) stops the demo with one line.
- **The environment of the examples.** ``refunds demo --serve`` keeps the stack up for the README's
  and the docs' examples; they need the demo's Redis, sandbox and web URLs and the venv's commands.
  The demo writes them to ``.demo/env`` (``source .demo/env``) and flags the example payments in
  the sandbox, as MCE's KYT would, so the examples' Creates succeed.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import requests

from refunds.errors import ConfigError
from refunds.store.ledger import Ledger

# The references the demo submits (devstack.demo): "demo-" + six hex digits + "-" + a number.
DEMO_REFERENCE = re.compile(r"^demo-[0-9a-f]{6}-[0-9]+$")
ENV_FILE = Path(".demo") / "env"

# Payments the examples refund (README, docs/index.md): flagged pending-refund when serving.
EXAMPLE_PAYMENTS = ("TX-1001", "TX-1002", "TX-1003")


def refuse_foreign_refunds(redis_url: str, shown_url: str) -> None:
    """Raise ConfigError when the database holds a refund the demo did not create.

    Reads the ledger's reference index oldest first and stops at the first foreign reference, so a
    large database costs one chunk. ``shown_url`` is the URL without its password, for the message.
    """
    ledger = Ledger.from_url(redis_url)
    try:
        total = ledger.record_count()
        foreign = next((r for r in ledger.iter_references() if not DEMO_REFERENCE.match(r)), None)
    finally:
        ledger.redis.close()
    if foreign is not None:
        raise ConfigError(
            f"REDIS_URL {shown_url} holds {total} refund(s) the demo did not create (e.g. "
            f"{foreign!r}); its workers would process them: unset REDIS_URL (the demo starts a "
            "private Redis) or point it at an empty database (e.g. another /db number)"
        )


def env_lines(
    redis_url: str, sandbox_url: str, web_url: str, database_url: str | None = None
) -> list[str]:
    """The lines of ``.demo/env``: the venv's commands first on PATH, and the demo's URLs (its
    SQL archive's too, so reads of refunds that left Redis answer from the same archive)."""
    bin_dir = str(Path(sys.executable).absolute().parent)  # not resolved: the venv's own bin
    values = {
        "REFUNDS_PROFILE": "sandbox",
        "REDIS_URL": redis_url,
        "MCE_BASE_URL": sandbox_url,
        "DEMO_API": web_url,
        "DEMO_SANDBOX": sandbox_url,
    }
    if database_url:
        values["REFUNDS_DATABASE_URL"] = database_url
    return [
        "# Written by `refunds demo --serve` for the examples; removed when the demo stops.",
        f'export PATH={shlex.quote(bin_dir)}:"$PATH"',
        *(f"export {name}={shlex.quote(value)}" for name, value in values.items()),
    ]


def write_env_file(
    redis_url: str,
    sandbox_url: str,
    web_url: str,
    database_url: str | None = None,
    path: Path = ENV_FILE,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = env_lines(redis_url, sandbox_url, web_url, database_url)
    path.write_text("\n".join(lines) + "\n")
    return path


def flag_example_payments(sandbox_url: str) -> None:
    """What MCE's KYT would do for the examples' payments: put each in pending-refund."""
    payments = [
        {
            "originalTransactionType": 1,
            "originalTransactionId": txn,
            "amount": "25.00",
            "currency": "USDT",
        }
        for txn in EXAMPLE_PAYMENTS
    ]
    response = requests.post(
        f"{sandbox_url}/sandbox/payments", json={"payments": payments}, timeout=10
    )
    response.raise_for_status()
