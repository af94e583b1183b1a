"""The three steps against the real simulator: what each one does to the ledger and the provider."""

from __future__ import annotations

import time

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.context import Context
from refunds.models import State
from refunds.policy import Policy
from tests.steps.conftest import PROCESSING_SECONDS, received


def assert_poll_due(ctx: Context, ref: str, polls: int, tolerance: float = 1.0) -> None:
    """The refund's timer is set for the poll schedule's delay after ``polls`` polls, from now."""
    due = ctx.ledger.due_at(ref)
    assert due is not None
    expected = time.time() + Policy.from_settings(ctx.settings).poll_delay(polls)
    assert expected - tolerance <= due <= expected


def test_create_confirm_poll_reaches_completed_with_one_create_and_one_confirm(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    received(ctx, sandbox, "r-1", amount="12.50")

    created = steps.create(ctx, "r-1")
    assert created.record is not None and created.record.state == State.CREATED
    assert created.record.crypto_refund_id
    assert created.next_task == "confirm"

    confirmed = steps.confirm(ctx, "r-1")
    assert confirmed.record is not None and confirmed.record.state == State.PROCESSING
    assert confirmed.next_task is None  # the timer brings the first Get, not a nudge
    assert_poll_due(ctx, "r-1", polls=0)

    time.sleep(PROCESSING_SECONDS + 0.2)  # the sandbox completes a refund this long after Confirm
    polled = steps.poll(ctx, "r-1")
    assert polled.record is not None and polled.record.state == State.COMPLETED
    assert polled.next_task is None

    assert ctx.ledger.get("r-1").state == State.COMPLETED
    assert sandbox.effects("r-1") == {"create": 1, "confirm": 1}
    calls = sandbox.calls()
    assert (calls.get("create"), calls.get("confirm"), calls.get("get")) == (1, 1, 1)


def test_a_second_create_does_not_call_the_provider_again(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    received(ctx, sandbox, "r-2")
    steps.create(ctx, "r-2")
    again = steps.create(ctx, "r-2")
    assert again.note == "nothing to create in state created"
    assert again.next_task is None
    assert sandbox.effects("r-2") == {"create": 1, "confirm": 0}
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
