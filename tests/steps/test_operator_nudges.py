"""An operator's nudge is a dispatch like the tick's: fenced, its timer one dispatch lease ahead.

Before, an approval or a retry nudged with no dispatch id and left the refund's timer a whole
``REFUNDS_LEASE_SECONDS`` (90 s) ahead, so a nudge lost with a crashing process cost a minute and a
half. Now the action's write records a dispatch id, the nudge carries it, and the timer is at most
``REFUNDS_DISPATCH_LEASE_SECONDS`` ahead.
"""

from __future__ import annotations

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.models import State
from refunds.store.keys import record_key
from refunds.store.timers import redis_now
from tests.steps.conftest import make_context, received

DISPATCH_LEASE = 15.0


def test_an_approval_nudges_a_fenced_confirm_with_a_short_safety_net(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    ctx = make_context(
        redis_db, sandbox, approval_thresholds="USDT=5", dispatch_lease_seconds=DISPATCH_LEASE
    )
    received(ctx, sandbox, "held-1", amount="12.50")
    held = steps.create(ctx, "held-1")
    assert held.record is not None and held.record.state == State.AWAITING_APPROVAL
    assert sandbox.calls().get("confirm", 0) == 0

    result = actions.approve(ctx.ledger, ctx.settings, "held-1", actor="ann", reason="checked")
    assert result.next_task == "confirm" and result.fence is not None
    assert result.fence == int(ctx.ledger.redis.hget(record_key("held-1"), "disp") or 0)
    due = ctx.ledger.due_at("held-1")
    assert due is not None and 0 < due - redis_now(ctx.ledger.redis) <= DISPATCH_LEASE
    assert result.record.history[-1].actor == "ann"  # an action's record keeps its history

    # A message of an older dispatch does nothing; the action's own one confirms.
    stale = steps.confirm(ctx, "held-1", result.fence - 1)
    assert stale.note == "stale message" and sandbox.calls().get("confirm", 0) == 0
    done = steps.confirm(ctx, "held-1", result.fence)
    assert done.record is not None and done.record.state == State.PROCESSING
    assert sandbox.effects("held-1") == {"create": 1, "confirm": 1}
    again = steps.confirm(ctx, "held-1", result.fence)  # the same message, redelivered
    assert again.note == "duplicate message" and sandbox.calls().get("confirm") == 1


def test_a_retry_that_nudges_is_fenced_and_one_to_a_hold_is_not(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    ctx = make_context(redis_db, sandbox, dispatch_lease_seconds=DISPATCH_LEASE)
    received(ctx, sandbox, "stop-1")
    record = ctx.ledger.get("stop-1")
    stopped = ctx.ledger.transition(record, State.NEEDS_ATTENTION, "test: stopped", timer="clear")
    assert stopped.state == State.NEEDS_ATTENTION

    result = actions.retry(ctx.ledger, ctx.settings, "stop-1", actor="ann", reason="back")
    assert result.record.state == State.RECEIVED and result.next_task == "create"
    assert result.fence is not None
    due = ctx.ledger.due_at("stop-1")
    assert due is not None and 0 < due - redis_now(ctx.ledger.redis) <= DISPATCH_LEASE
    done = steps.create(ctx, "stop-1", result.fence)
    assert done.record is not None and done.record.state == State.PROCESSING

    # A retry back to a hold nudges nothing, so it writes no dispatch id either.
    held_ctx = make_context(redis_db, sandbox, approval_thresholds="USDT=5")
    received(held_ctx, sandbox, "held-2", amount="12.50")
    steps.create(held_ctx, "held-2")
    record = held_ctx.ledger.get("held-2")
    held_ctx.ledger.transition(record, State.NEEDS_ATTENTION, "test: stopped", timer="clear")
    back = actions.retry(held_ctx.ledger, held_ctx.settings, "held-2", actor="ann", reason="b")
    assert back.record.state == State.AWAITING_APPROVAL
    assert back.next_task is None and back.fence is None
