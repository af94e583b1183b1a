"""The scheduler tick: hands due refunds to the step that moves them on.

Celery beat sends ``refunds.tick`` about once a second. The tick claims due references under a
lease (an atomic script bumps their due time, so two ticks never hand out the same refund) and
sends one task per refund, chosen by its state, carrying the dispatch id (fence) the claim wrote:
a message of an older dispatch does nothing. A refund whose step is running (its lock held and
renewed) is not handed out. It makes no provider call, so it is cheap and runs
on its own queue. A lost tick is harmless: the next one finds the same refunds still due.
"""

from __future__ import annotations

import logging
import math

from refunds.context import Context, current_context
from refunds.models import State
from refunds.steps import STEP_FOR_STATE
from refunds.store.workers import STALE_AFTER_SECONDS
from tasks.notifications import deliver
from tasks.refunds import TASKS
from worker.app import app

log = logging.getLogger("refunds.schedule")

# Batches per tick: enough to drain a backlog quickly without one tick running for long.
_MAX_BATCHES = 4


def _provider_budget(p: Context) -> tuple[int, int]:
    """How many refunds to hand out this tick (per batch, and batches).

    Every step makes a provider call, so handing out more than the cluster's pace allows only
    makes steps that are throttled and come back: while a 429 holds the cluster back, none are
    handed out (they stay due), and with MCE_MAX_RPS set, about two ticks' worth of calls are.
    """
    if p.participants is not None and p.participants.registry.from_file:
        # A registry: one pace per credential. A held-back credential must not stop the tick
        # for the others (its steps come back throttled), so only the sum of the paces caps it.
        rates = [c.max_rps for c in p.participants.registry.credentials.values()]
        if all(rates):
            budget = math.ceil(sum(r or 0 for r in rates) * p.settings.tick_interval * 2)
            return max(1, min(budget, p.settings.tick_batch)), 1
        return p.settings.tick_batch, _MAX_BATCHES
    pacer = p.client.pacer
    if pacer is not None and pacer.wait_now() > p.settings.pacing_max_wait:
        return 0, 0
    if p.settings.mce_max_rps:
        budget = math.ceil(p.settings.mce_max_rps * p.settings.tick_interval * 2)
        return max(1, min(budget, p.settings.tick_batch)), 1
    return p.settings.tick_batch, _MAX_BATCHES


def _sweep_gone_workers(p: Context) -> None:
    """Make the unstarted dispatches of workers that stopped beating due now (refunds.store.
    workers), so this tick hands them out again: seconds after a worker dies, not a dispatch
    lease. A failed sweep is logged and the tick goes on: the leases still cover those refunds."""
    try:
        gone = p.ledger.workers.sweep(STALE_AFTER_SECONDS)
    except Exception:  # noqa: BLE001 - the tick's own work must not depend on the sweep
        log.warning("tick: the worker sweep failed; lost dispatches wait for their lease")
        return
    for worker in gone:
        log.warning(
            "worker %s stopped beating %.1f s ago; %d dispatch(es) it held but never started "
            "are due again now",
            worker.name,
            worker.silent_for,
            len(worker.redispatched),
            extra={"worker": worker.name, "redispatched": list(worker.redispatched)[:20]},
        )


# send_events=False: no task events for the heartbeat (one a second, 86,400 a day), so Flower's
# task list and memory hold refund steps and notifications (issue 11). Beat's scheduler does not
# emit task-sent for it either (worker/beat.py).
@app.task(name="refunds.tick", acks_late=False, ignore_result=True, send_events=False)
def tick() -> int:
    """Dispatch every refund (and outcome notification) that is due; returns how many."""
    p = current_context()
    handed = 0
    _sweep_gone_workers(p)
    batch, batches = _provider_budget(p)
    for _ in range(batches):
        # One script claims the batch and answers each refund's state.
        # The lease is the "dispatched, not started" one: a message that starts within it is
        # not sent again however long the queue (its step's heartbeat keeps the timer).
        claimed = p.ledger.claim_dispatch(p.settings.dispatch_lease, batch)
        for ref, state, fence in claimed:
            try:
                step = STEP_FOR_STATE.get(State(state)) if state else None
            except ValueError:
                # A state this code does not know (a newer release wrote it, or a hand edit):
                # skip it, loudly, rather than crash the tick and stall every refund. Its timer
                # stays, leased, so a release that knows the state picks it up.
                log.error(  # noqa: TRY400 - an unknown value, no traceback to show
                    "tick: unknown state %r; skipped", state, extra={"client_reference": ref}
                )
                continue
            if step is None:
                # Final, held for a human, or gone: nothing should be timing it.
                p.ledger.clear_timer(ref)
                continue
            TASKS[step].apply_async((ref, fence))
            handed += 1
        if len(claimed) < batch:
            break
    # The outbox claim also records the heartbeat ("the scheduler is alive and served": health
    # checks read it), in the same round trip.
    members = p.ledger.claim_outbox(p.settings.lease_seconds, p.settings.tick_batch, heartbeat=True)
    for member in members:
        deliver.apply_async((member,))
        handed += 1
    return handed
