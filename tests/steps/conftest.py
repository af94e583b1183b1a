"""Fixtures of the step tests: a real Context against a private Redis and an in-process sandbox.

Steps and decisions are called directly, in this process: no Celery, no worker, no beat. The
sandbox is the real simulator (``sandbox.server.make_server``) answering real HTTP on 127.0.0.1
from a thread, reset before every test so its counters count that test's calls only; each test
gets a fresh, empty Redis database (``redis_db``). That makes these tests fast and deterministic:
the place for the money rules.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import load_settings
from devstack.sandbox_admin import SandboxAdmin
from refunds.context import Context, build_context
from refunds.models import RefundIntent, RefundRecord
from sandbox.server import SandboxServer, make_server

# The sandbox completes a confirmed refund after this long; tests that poll wait it out.
PROCESSING_SECONDS = 0.2
STEP_SANDBOX_CONFIG: dict[str, Any] = {
    "processing_seconds": PROCESSING_SECONDS,
    "token_ttl_seconds": 3600,
    "latency_ms": 0,
}


@pytest.fixture(scope="session")
def sandbox_in_process() -> Iterator[SandboxServer]:
    """The simulator serving from a thread of the test process, on a free port of 127.0.0.1."""
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def sandbox(sandbox_in_process: SandboxServer) -> SandboxAdmin:
    """The in-process sandbox, reset: no refunds, tokens, payments or counts from other tests.

    Set switches with ``sandbox.configure(...)``, read counts with ``sandbox.calls()`` and
    ``sandbox.effects(ref)``.
    """
    admin = SandboxAdmin(sandbox_in_process.url, defaults=STEP_SANDBOX_CONFIG)
    admin.reset()
    return admin


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    """A Context as a worker builds it, on a fresh Redis database and the reset sandbox.

    The retry jitter is seeded, so a test that looks at backoff sees the same numbers every run.
    """
    return make_context(redis_db, sandbox)


def make_context(redis_db: str, sandbox: SandboxAdmin, **overrides: object) -> Context:
    """A Context as a worker process builds it (its own token cache), with seeded jitter and
    the steps tests' short timings; ``overrides`` are Settings fields."""
    settings = load_settings(
        profile="sandbox",
        redis_url=redis_db,
        mce_base_url=sandbox.url,
        retry_base_seconds=0.1,
        retry_max_seconds=1,
        http_connect_timeout=1,
        http_read_timeout=2,
        **overrides,
    )
    context = build_context(settings)
    context.rng = random.Random(7)
    return context


def intent(ref: str, txn: str | None = None, **fields: Any) -> RefundIntent:
    """A refund intent for ``ref`` (its payment id ``tx-REF`` unless given)."""
    return RefundIntent.parse(
        {
            "originalTransactionType": 1,
            "originalTransactionId": txn or f"tx-{ref}",
            "clientReference": ref,
            **fields,
        }
    )


def received(ctx: Context, sandbox: SandboxAdmin, ref: str, **payment: Any) -> RefundRecord:
    """A refund in ``received`` whose payment the sandbox will refund (``payment``: amount, ...)."""
    sandbox.flag([f"tx-{ref}"], **payment)
    return ctx.ledger.submit(intent(ref), due_in=ctx.settings.lease_seconds).record
