"""The three steps against the real simulator: what each one does to the ledger and the provider."""

from __future__ import annotations

import time

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.context import Context
from refunds.models import State
from refunds.policy import Policy
from refunds.store.keys import record_key
from tests.steps.conftest import PROCESSING_SECONDS, make_context, received


def assert_poll_due(ctx: Context, ref: str, polls: int, tolerance: float = 1.0) -> None:
    """The refund's timer is set for the poll schedule's delay after ``polls`` polls, from now."""
    due = ctx.ledger.due_at(ref)
    assert due is not None
    expected = time.time() + Policy.from_settings(ctx.settings).poll_delay(polls)
    assert expected - tolerance <= due <= expected


def test_create_confirms_in_the_same_task_then_poll_reaches_completed(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    received(ctx, sandbox, "r-1", amount="12.50")

    created = steps.create(ctx, "r-1")  # Create, then Confirm under the same lock
    assert created.record is not None and created.record.state == State.PROCESSING
    assert created.record.crypto_refund_id
    assert created.next_task is None  # no refunds.confirm message: the timer brings the Get
    assert created.parked is False  # the last write looked: no webhook waits
    assert_poll_due(ctx, "r-1", polls=0)
    record = ctx.ledger.get("r-1")
    assert [h.to_state for h in record.history] == [
        "received",
        "creating",
        "created",
        "confirming",
        "processing",
    ]
    assert record.version == 5  # one version per history line
    lease = ctx.ledger.redis.hmget(record_key("r-1"), "lk", "lku")
    assert lease == ["", ""]  # released by the last write

    time.sleep(PROCESSING_SECONDS + 0.2)  # the sandbox completes a refund this long after Confirm
    polled = steps.poll(ctx, "r-1")
    assert polled.record is not None and polled.record.state == State.COMPLETED
    assert polled.next_task is None

    assert ctx.ledger.get("r-1").state == State.COMPLETED
    assert sandbox.effects("r-1") == {"create": 1, "confirm": 1}
    calls = sandbox.calls()
    assert (calls.get("create"), calls.get("confirm"), calls.get("get")) == (1, 1, 1)


def test_confirm_as_its_own_step_reaches_completed_with_one_create_and_one_confirm(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    ctx = make_context(redis_db, sandbox, confirm_inline=False)
    received(ctx, sandbox, "r-1b", amount="12.50")

    created = steps.create(ctx, "r-1b")
    assert created.record is not None and created.record.state == State.CREATED
    assert created.record.crypto_refund_id
    assert created.next_task == "confirm" and created.fence == 1  # the nudge is a dispatch

    confirmed = steps.confirm(ctx, "r-1b", created.fence)
    assert confirmed.record is not None and confirmed.record.state == State.PROCESSING
    assert confirmed.next_task is None  # the timer brings the first Get, not a nudge
    assert_poll_due(ctx, "r-1b", polls=0)

    time.sleep(PROCESSING_SECONDS + 0.2)
    polled = steps.poll(ctx, "r-1b")
    assert polled.record is not None and polled.record.state == State.COMPLETED
    assert sandbox.effects("r-1b") == {"create": 1, "confirm": 1}
    calls = sandbox.calls()
    assert (calls.get("create"), calls.get("confirm"), calls.get("get")) == (1, 1, 1)


def test_a_create_too_slow_for_another_step_in_the_task_nudges_confirm(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    """Two calls of 1 + 2 s must still fit under the soft limit (6.5 s) after the Create: a
    Create that took 0.6 s leaves 5.9 s, so Confirm goes out as its own, fenced, message."""
    ctx = make_context(
        redis_db, sandbox, task_soft_time_limit=6.5, task_time_limit=7.0, lease_seconds=30
    )
    sandbox.configure(latency_ms=600, fault_operations=["create"])
    received(ctx, sandbox, "r-slow")
    created = steps.create(ctx, "r-slow")
    assert created.record is not None and created.record.state == State.CREATED
    assert created.next_task == "confirm" and created.fence is not None
    assert sandbox.calls().get("confirm", 0) == 0


def test_a_second_create_does_not_call_the_provider_again(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    received(ctx, sandbox, "r-2")
    steps.create(ctx, "r-2")
    again = steps.create(ctx, "r-2")
    assert again.note == "nothing to create in state processing"
    assert again.next_task is None
    assert sandbox.effects("r-2") == {"create": 1, "confirm": 1}
    assert sandbox.calls().get("create") == 1


def test_confirm_before_create_does_nothing(ctx: Context, sandbox: SandboxAdmin) -> None:
    received(ctx, sandbox, "r-3")
    result = steps.confirm(ctx, "r-3")
    assert result.note == "nothing to confirm in state received"
    assert ctx.ledger.get("r-3").state == State.RECEIVED
    assert sandbox.calls().get("confirm", 0) == 0


def test_poll_before_the_provider_finishes_keeps_following(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(processing_seconds=60)
    received(ctx, sandbox, "r-4")
    steps.create(ctx, "r-4")
    steps.confirm(ctx, "r-4")
    polled = steps.poll(ctx, "r-4")
    assert polled.record is not None and polled.record.state == State.PROCESSING
    assert polled.record.polls == 1
    assert polled.next_task is None
    assert_poll_due(ctx, "r-4", polls=1)
    assert sandbox.effects("r-4") == {"create": 1, "confirm": 1}
