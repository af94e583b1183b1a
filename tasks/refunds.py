"""Thin tasks over ``refunds.steps``: each takes a clientReference, runs one step, nudges the next.

Retry policy lives in the steps and the ledger's timer, not in Celery: a failed provider call is
recorded and the refund comes due again after its backoff, so no task sleeps in a worker slot and
no countdown exceeds a minute. A task that dies (SIGKILL, hard time limit, lost Redis connection)
stops its step's heartbeat, so the step lock and the refund's timer run out within one short step
lease (``REFUNDS_STEP_LEASE_SECONDS``) and the scheduler tick hands it out again with a new
dispatch id; a soft time limit makes the refund due at once. A message redelivered for a dispatch
that already started, or sent for an older dispatch, does nothing (see
``refunds.steps.lease.locked``).
"""

from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from refunds.context import current_context
from refunds.models import State
from refunds.steps import STEPS, NextTask
from refunds.webhooks import replay_parked
from tasks.outcome import RefundStoppedError, stop_of
from worker.app import app

log = logging.getLogger("refunds.tasks")


def run_step(name: NextTask, client_reference: str, fence: int | None = None) -> str:
    """Run one step; raises RefundStoppedError (after every write) when it stopped the refund for a
    human, so the task ends in FAILURE with the provider's code (``tasks.outcome``)."""
    p = current_context()
    (before,) = p.ledger.states_of([client_reference])
    try:
        result = STEPS[name](p, client_reference, fence)
    except SoftTimeLimitExceeded:
        # The step's lock was released on the way out (its heartbeat stopped first): make the
        # refund due at once, so the tick hands it out again now instead of after a lease.
        p.ledger.due_soon(client_reference, 0.0)
        log.warning(
            "%s: soft time limit; due again at once",
            name,
            extra={"client_reference": client_reference},
        )
        return "soft time limit"
    if result.next_task is not None:
        TASKS[result.next_task].apply_async((client_reference, result.fence))
    # After every step (not only Create): webhooks parked while the refund could not take them
    # are tried again now that it moved. Parking checks the record version, so an event parked
    # during this step is either seen here or was refused and retried by its own delivery. The
    # step's last write already read whether any is parked (``parked`` False: none, no look).
    last = result.record
    if result.parked is not False:
        for replayed in replay_parked(p, client_reference):
            if replayed.next_task is not None:
                TASKS[replayed.next_task].apply_async((client_reference,))
            if replayed.state == State.NEEDS_ATTENTION:
                # A parked webhook replayed here stopped the refund: report its record's error.
                last = p.ledger.find(client_reference)
    stopped = stop_of(before, last)
    if stopped is not None:
        raise stopped
    return result.note


@app.task(
    name="refunds.create", acks_late=True, reject_on_worker_lost=True, throws=(RefundStoppedError,)
)
def create(client_reference: str, fence: int | None = None) -> str:
    """Create the MCE refund for one intent (idempotent on its clientReference).

    ``fence``: the tick's dispatch id (None for a nudge); a stale one makes the task a no-op."""
    return run_step("create", client_reference, fence)


@app.task(
    name="refunds.confirm", acks_late=True, reject_on_worker_lost=True, throws=(RefundStoppedError,)
)
def confirm(client_reference: str, fence: int | None = None) -> str:
    """Confirm the MCE refund (an already-confirmed answer counts as done)."""
    return run_step("confirm", client_reference, fence)


@app.task(
    name="refunds.poll", acks_late=True, reject_on_worker_lost=True, throws=(RefundStoppedError,)
)
def poll(client_reference: str, fence: int | None = None) -> str:
    """Read the refund's provider status once; the timer schedules the next read."""
    return run_step("poll", client_reference, fence)


TASKS: dict[NextTask, Task] = {"create": create, "confirm": confirm, "poll": poll}
