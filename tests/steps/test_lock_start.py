"""Taking a step's lock writes the step's start in the same script (issue 12: fewer commands).

The lock, the record, the dispatch recorded as started and the timer one short lease ahead come
from one script; a stale or duplicate dispatch id takes the lock but starts nothing, exactly as
the separate heartbeat call did before; a lock held by someone else answers its expiry.
"""

from __future__ import annotations

import time

from devstack.sandbox_admin import SandboxAdmin
from refunds.context import Context
from refunds.store.keys import record_key
from refunds.store.timers import redis_now
from tests.steps.conftest import received

LEASE = 5.0


def _claimed(ctx: Context, ref: str) -> int:
    """Make ``ref`` due now and claim it as the tick does (30 s lease); answers the fence."""
    ctx.ledger.due_soon(ref, 0.0)
    time.sleep(0.01)
    claims = {r: fence for r, _, fence in ctx.ledger.claim_dispatch(30.0, 100)}
    return claims[ref]


def _start(ctx: Context, ref: str) -> int:
    return int(ctx.ledger.redis.hget(record_key(ref), "start") or 0)


def test_a_fenced_lock_records_the_start_and_keeps_the_timer_one_lease_ahead(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    ref = "lockstart-1"
    received(ctx, sandbox, ref)
    fence = _claimed(ctx, ref)
    assert fence >= 1
    lock, busy_for = ctx.ledger.try_lock(ref, LEASE, start=True, fence=fence)
    assert lock is not None and busy_for == 0.0
    assert lock.began
    assert lock.record is not None and lock.record.client_reference == ref
    assert (lock.fence, lock.started) == (fence, 0)  # read before the start was written
    assert _start(ctx, ref) == fence
    due = ctx.ledger.due_at(ref)
    assert due is not None
    assert 0 < due - redis_now(ctx.ledger.redis) <= LEASE  # not the tick's 30 s lease any more

    # Held: a second taker gets nothing and the seconds until the lock would expire.
    other, busy_for = ctx.ledger.try_lock(ref, LEASE, start=True, fence=fence)
    assert other is None and 0 < busy_for <= LEASE
    ctx.ledger.unlock(ref, lock)

    # The same dispatch again (a redelivered message): locked, nothing started, timer untouched.
    due_before = ctx.ledger.due_at(ref)
    again, _ = ctx.ledger.try_lock(ref, 0.5, start=True, fence=fence)
    assert again is not None and not again.began and again.started == fence
    assert ctx.ledger.due_at(ref) == due_before
    ctx.ledger.unlock(ref, again)

    # An older dispatch id (stale): nothing started either.
    stale, _ = ctx.ledger.try_lock(ref, 0.5, start=True, fence=fence - 1)
    assert stale is not None and not stale.began
    assert _start(ctx, ref) == fence and ctx.ledger.due_at(ref) == due_before
    ctx.ledger.unlock(ref, stale)


def test_a_nudge_moves_the_timer_without_a_fence_and_a_plain_lock_moves_nothing(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    ref = "lockstart-2"
    received(ctx, sandbox, ref)
    fence = _claimed(ctx, ref)
    claimed_due = ctx.ledger.due_at(ref)
    assert claimed_due is not None

    plain, _ = ctx.ledger.try_lock(ref, LEASE)
    assert plain is not None and not plain.began
    assert ctx.ledger.due_at(ref) == claimed_due and _start(ctx, ref) == 0
    ctx.ledger.unlock(ref, plain)

    nudge, _ = ctx.ledger.try_lock(ref, LEASE, start=True)
    assert nudge is not None and nudge.began
    assert _start(ctx, ref) == 0  # a nudge carries no dispatch id
    due = ctx.ledger.due_at(ref)
    assert due is not None and due < claimed_due
    assert fence == nudge.fence
    ctx.ledger.unlock(ref, nudge)


def test_no_record_takes_the_lock_and_starts_nothing(ctx: Context) -> None:
    lock, _ = ctx.ledger.try_lock("lockstart-none", LEASE, start=True, fence=3)
    assert lock is not None and lock.record is None and not lock.began
    assert ctx.ledger.due_at("lockstart-none") is None
    ctx.ledger.unlock("lockstart-none", lock)
