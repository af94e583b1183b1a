"""Outages without humans (issue 11): time-based give-up and the credentials pause, step by step.

Real Redis, the real simulator over HTTP, the steps called in this process.
"""

from __future__ import annotations

import logging
import time

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.context import Context
from refunds.decisions import FAILING_SINCE
from refunds.models import State
from refunds.store.pacing import CredentialsGate
from tests.steps.conftest import make_context, received


def context(redis_db: str, sandbox: SandboxAdmin, **overrides: object) -> Context:
    """A second "process" on the same Redis and sandbox, with its own token cache and settings."""
    return make_context(redis_db, sandbox, **overrides)


def test_an_outage_of_many_attempts_does_not_give_up_before_the_time_limit(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    received(ctx, sandbox, "o-1")
    sandbox.configure(error_rates={"503": 1.0}, fault_operations=["create", "confirm", "get"])
    first = None
    for _ in range(40):  # more than the old REFUNDS_MAX_ATTEMPTS=25
        result = steps.create(ctx, "o-1")
        assert result.record is not None
        assert result.record.state == State.CREATING, result.note
        assert result.note.startswith("retry in")
        since = result.record.last_error[FAILING_SINCE]  # type: ignore[index]
        first = since if first is None else first
        assert since == first  # the streak's start is kept
    assert ctx.ledger.get("o-1").attempts == 40

    sandbox.configure(error_rates={})  # the provider is back: the next try goes through
    done = steps.create(ctx, "o-1")  # and Confirm follows in the same task
    assert done.record is not None and done.record.state == State.PROCESSING
    assert done.record.last_error is None  # success ends the streak


def test_a_streak_longer_than_give_up_after_goes_to_needs_attention(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    p = context(redis_db, sandbox, give_up_after=1.0)
    received(p, sandbox, "o-2")
    sandbox.configure(error_rates={"503": 1.0})
    assert steps.create(p, "o-2").note.startswith("retry in")
    time.sleep(1.1)
    stopped = steps.create(p, "o-2")
    assert stopped.record is not None and stopped.record.state == State.NEEDS_ATTENTION
    history = p.ledger.get("o-2").history
    assert history[-1].reason.startswith("gave up after 1s of failures: ")


def test_a_permanent_error_still_stops_at_once(redis_db: str, sandbox: SandboxAdmin) -> None:
    ctx = context(redis_db, sandbox, confirm_inline=False)  # stop at created: Confirm alone
    received(ctx, sandbox, "o-3")
    steps.create(ctx, "o-3")  # created
    record = ctx.ledger.get("o-3")
    assert record.state == State.CREATED
    # Confirm of a refund the provider does not know: 404 on confirm is permanent.
    ctx.ledger.transition(record, State.CREATED, "", fields={"crypto_refund_id": "nope"})
    stopped = steps.confirm(ctx, "o-3")
    assert stopped.record is not None and stopped.record.state == State.NEEDS_ATTENTION
    assert ctx.ledger.get("o-3").history[-1].reason.startswith("provider refused: ")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_pause_the_cluster_log_once_and_cost_no_attempt(
    redis_db: str, sandbox: SandboxAdmin, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    a = context(redis_db, sandbox, auth_pause_seconds=1.5)
    b = context(redis_db, sandbox, auth_pause_seconds=1.5)  # another worker process
    for ref in ("k-1", "k-2", "k-3"):
        received(a, sandbox, ref)
    sandbox.configure(token_refuse_status=status)
    caplog.set_level(logging.INFO, logger="refunds.auth")

    results = [steps.create(a, "k-1"), steps.create(b, "k-2"), steps.create(a, "k-3")]
    for result in results:
        assert result.note.startswith("throttled for "), result.note
        assert result.record is not None and result.record.state == State.CREATING
        assert result.record.attempts == 0  # not an attempt
        assert result.record.last_error is None  # no failure streak either
    assert sandbox.calls().get("token") == 1  # one token call; the others met the pause
    assert sandbox.calls().get("create", 0) == 0
    errors = [r for r in caplog.records if r.name == "refunds.auth" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "refused our credentials" in errors[0].getMessage()
    gate = CredentialsGate(a.ledger.redis, 1.5)
    assert gate.refused_since() is not None
    assert a.client.pacer is not None and a.client.pacer.wait_now() > 0.5  # provider calls paused

    time.sleep(1.6)  # the next probe is due: it is refused again, still no second ERROR line
    assert steps.create(b, "k-2").note.startswith("throttled for ")
    assert steps.create(a, "k-1").note.startswith("throttled for ")
    assert sandbox.calls().get("token") == 2
    errors = [r for r in caplog.records if r.name == "refunds.auth" and r.levelno == logging.ERROR]
    assert len(errors) == 1

    sandbox.configure(token_refuse_status=None)  # credentials fixed
    time.sleep(1.6)
    for p, ref in ((a, "k-1"), (b, "k-2"), (a, "k-3")):
        done = steps.create(p, ref)  # Create, then Confirm in the same task
        assert done.record is not None and done.record.state == State.PROCESSING, done.note
    assert sandbox.calls().get("token") == 3
    assert gate.refused_since() is None  # the incident is over
    assert any("accepts our credentials again" in r.getMessage() for r in caplog.records)
