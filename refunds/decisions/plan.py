"""The vocabulary of the decisions and their product, the write plan (:class:`Decision`).

A Decision is everything its writer needs: the target state, the fields, the history reason, the
timer, the outbox entries to queue, whether the write dispatches the next step (and whether that
step may begin in the same write), the error code to count and the conflict mark to list. The
writer (``refunds.steps.apply``) performs it and never asks the decisions, the policy or the
notification code again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from refunds.mce.contract import (
    STATUS_COMPLETED,
    STATUS_CREATED,
    STATUS_FAILED,
    STATUS_NAMES,
    STATUS_PROCESSING,
    STATUS_REJECTED,
)
from refunds.models import FINAL_STATES, State

NextTask = Literal["create", "confirm", "poll"]
Source = Literal["create", "lookup", "confirm", "poll", "webhook"]
Timer = Literal["keep", "set", "clear"]
Outcome = Literal["applied", "stale", "mismatch", "anomaly", "conflict"]

PROVIDER_MISMATCH = "PROVIDER_MISMATCH"
PROVIDER_AMOUNT_INVALID = "PROVIDER_AMOUNT_INVALID"
#: A step asked for an edge the transition table forbids: a bug, stopped for a human.
INTERNAL_TRANSITION_REFUSED = "INTERNAL_TRANSITION_REFUSED"

# Which step moves a refund on from each state (what the timer dispatches). A held refund is
# read (polled) slowly; a ``created`` one whose provider status is unknown is read, not confirmed,
# by the confirm step (see ``steps.confirm``).
STEP_FOR_STATE: dict[State, NextTask] = {
    State.RECEIVED: "create",
    State.CREATING: "create",
    State.CREATED: "confirm",
    State.AWAITING_APPROVAL: "poll",
    State.CONFIRMING: "confirm",
    State.PROCESSING: "poll",
}

# Forward order of the main line, so provider news never moves a refund backwards.
RANK = {
    State.RECEIVED: 0,
    State.CREATING: 1,
    State.CREATED: 2,
    State.AWAITING_APPROVAL: 3,
    State.CONFIRMING: 4,
    State.PROCESSING: 5,
}
STATE_FOR_STATUS = {
    STATUS_CREATED: State.CREATED,
    STATUS_PROCESSING: State.PROCESSING,
    STATUS_COMPLETED: State.COMPLETED,
    STATUS_FAILED: State.FAILED,
    STATUS_REJECTED: State.REJECTED,
}
STATUS_WORD = {
    STATUS_CREATED: "created",
    STATUS_PROCESSING: "processing",
    STATUS_COMPLETED: "completed",
    STATUS_FAILED: "failed",
    STATUS_REJECTED: "rejected",
}
LABEL: dict[Source, str] = {
    "create": "created at provider",
    "lookup": "found at provider by clientReference",
    "confirm": "confirmed at provider",
    "poll": "provider status",
    "webhook": "webhook",
}


@dataclass(frozen=True)
class Decision:
    """What to write for one piece of provider news (or one approval hold): the write plan.

    ``write`` False: change nothing at all. Otherwise one transition to ``target`` with ``reason``
    ('' when the state stays) and ``fields`` (RefundRecord attribute -> value, None deletes);
    ``timer``: "set" to ``now + due_in`` seconds, "clear", or "keep"; ``nudge``: the task to send
    at once (the timer is the safety net); ``notify``: a final outcome, whose notifications are
    ``outbox`` (one entry per configured channel, queued in the same write). ``dispatch``: the
    write records a new dispatch id for ``nudge`` (the writer keeps its timer within one dispatch
    lease); ``inline``: ``nudge`` may begin in the same write and run in the same task, when the
    task's time budget allows (the writer's to judge: it knows the clock). ``code`` names a stop
    for a human (counted); ``conflict`` is the mark written for a contradiction (listed).
    ``level`` and ``note``: how the writer logs it.
    """

    outcome: Outcome
    target: State
    note: str
    write: bool = True
    reason: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    timer: Timer = "keep"
    due_in: float | None = None
    nudge: NextTask | None = None
    notify: bool = False
    outbox: tuple[str, ...] = ()
    dispatch: bool = False
    inline: bool = False
    code: str | None = None
    conflict: Mapping[str, Any] | None = None
    level: int = logging.INFO


def known_status(status: int | None) -> bool:
    return status is not None and status in STATUS_NAMES


def state_for_status(current: State, status: int | None) -> State:
    """Where a status puts a refund, ignoring who said it: forward only, never out of final.

    Unknown (or absent) status: it exists at the provider, so at least ``created``.
    """
    if current in FINAL_STATES:
        return current
    target = STATE_FOR_STATUS.get(status) if status is not None else None
    if target is None:
        target = State.CREATED
    if target in FINAL_STATES:
        return target
    if current in RANK and RANK[target] <= RANK[current]:
        return current
    return target


def status_rank(status: int | None) -> int | None:
    """Order of known provider statuses (None: absent or unknown, not comparable)."""
    if not known_status(status):
        return None
    if status in (STATUS_COMPLETED, STATUS_FAILED, STATUS_REJECTED):
        return 2
    return 0 if status == STATUS_CREATED else 1
