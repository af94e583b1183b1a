"""The demo refuses a Redis database holding refunds it did not create, before starting anything.

Its workers and beat take every refund that comes due in their database: pointed at someone's
refunds they would drive each into needs_attention against the sandbox. A real private Redis holds
the foreign record, written through the ledger as a merchant's intake would write it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.demo_env import refuse_foreign_refunds
from devstack.processes import Child, start_redis
from refunds.errors import ConfigError
from refunds.models import RefundIntent, State
from refunds.store.ledger import Ledger

REFUNDS = Path(sys.executable).parent / "refunds"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    child: Child
    child, url = start_redis(tmp_path / "redis", appendonly=False)
    yield url
    child.stop()


def _submit(url: str, ref: str) -> None:
    intent = RefundIntent.parse(
        {"originalTransactionType": 1, "originalTransactionId": f"TX-{ref}", "clientReference": ref}
    )
    Ledger.from_url(url).submit(intent, due_in=0)


def test_demo_exits_2_with_one_line_on_a_database_holding_foreign_refunds(
    private_redis: str,
) -> None:
    _submit(private_redis, "order-7-refund")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCE_", "REFUNDS_"))}
    env["REDIS_URL"] = private_redis
    result = subprocess.run(
        [str(REFUNDS), "demo", "--count", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("refunds: REDIS_URL redis://127.0.0.1:")
    assert "holds 1 refund(s) the demo did not create (e.g. 'order-7-refund')" in lines[0]
    assert "unset REDIS_URL" in lines[0]
    # Nothing was started or submitted: the foreign refund is untouched and alone.
    ledger = Ledger.from_url(private_redis)
    assert ledger.references() == ["order-7-refund"]
    assert ledger.get("order-7-refund").state == State.RECEIVED


def test_demo_accepts_an_empty_database_and_one_holding_only_demo_refunds(
    private_redis: str,
) -> None:
    refuse_foreign_refunds(private_redis, "redis://test")
    _submit(private_redis, "demo-0a1b2c-01")
    _submit(private_redis, "demo-0a1b2c-02")
    refuse_foreign_refunds(private_redis, "redis://test")
    _submit(private_redis, "demo-0a1b2c-03x")  # not a demo reference: one character off
    with pytest.raises(ConfigError, match="holds 3 refund"):
        refuse_foreign_refunds(private_redis, "redis://test")
