"""Thin tasks over ``refunds.steps``: each takes a clientReference, runs one step, nudges the next.

Retry policy lives in the steps and the ledger's timer, not in Celery: a failed provider call is
recorded and the refund comes due again after its backoff, so no task sleeps in a worker slot and
no countdown exceeds a minute. A task that dies (SIGKILL, time limit, lost Redis connection) leaves
the refund's lease to run out, and the scheduler tick hands it out again.
"""

from __future__ import annotations

from celery import Task

from refunds.context import current_context
from refunds.steps import STEPS, NextTask
from refunds.webhooks import replay_parked
from worker.app import app


def run_step(name: NextTask, client_reference: str) -> str:
    p = current_context()
    result = STEPS[name](p, client_reference)
    if result.next_task is not None:
        TASKS[result.next_task].apply_async((client_reference,))
    # After every step (not only Create): webhooks parked while the refund could not take them
    # are tried again now that it moved. Parking checks the record version, so an event parked
    # during this step is either seen here or was refused and retried by its own delivery.
    for replayed in replay_parked(p, client_reference):
        if replayed.next_task is not None:
            TASKS[replayed.next_task].apply_async((client_reference,))
    return result.note


@app.task(name="refunds.create", acks_late=True, reject_on_worker_lost=True)
def create(client_reference: str) -> str:
    """Create the MCE refund for one intent (idempotent on its clientReference)."""
    return run_step("create", client_reference)


@app.task(name="refunds.confirm", acks_late=True, reject_on_worker_lost=True)
def confirm(client_reference: str) -> str:
    """Confirm the MCE refund (an already-confirmed answer counts as done)."""
    return run_step("confirm", client_reference)


@app.task(name="refunds.poll", acks_late=True, reject_on_worker_lost=True)
def poll(client_reference: str) -> str:
    """Read the refund's provider status once; the timer schedules the next read."""
    return run_step("poll", client_reference)


TASKS: dict[NextTask, Task] = {"create": create, "confirm": confirm, "poll": poll}
