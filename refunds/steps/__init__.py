"""Plain functions the Celery tasks call: one step of one refund, at most one provider call.

- ``lease``: the step lock, its heartbeat, and the write that releases it;
- ``operations``: the three steps, Create, Confirm and Poll (``STEPS`` by name);
- ``apply``: applying an answer, the one place provider news moves a refund (decide, then write
  the decision's plan);
- ``failures``: what a failed provider call writes (retry on the timer, or stop for a human).

The result says which task (if any) to nudge next; the durable timer is the safety net for every
nudge, so a lost message or a crashed worker delays a refund but never loses it.
"""

from refunds.decisions import STEP_FOR_STATE, NextTask, state_for_status
from refunds.steps.apply import apply_provider_update, perform
from refunds.steps.operations import STEPS, confirm, create, poll
from refunds.steps.result import StepResult

__all__ = [
    "STEPS",
    "STEP_FOR_STATE",
    "NextTask",
    "StepResult",
    "apply_provider_update",
    "confirm",
    "create",
    "perform",
    "poll",
    "state_for_status",
]
