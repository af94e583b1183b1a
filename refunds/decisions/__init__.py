"""The decisions: pure functions of (record, news or failure, policy, time) that answer the
complete write plan (:class:`Decision`); the steps and the webhook handler perform it.

- ``plan``: the Decision and the shared vocabulary (states per status, the step per state);
- ``answers``: :func:`decide`, what a provider answer or a webhook does;
- ``stops``: news that is refused (another refund, invalid amounts, contradicting a final state);
- ``holds``: the gate before Confirm (the approval hold), one rule for every path there;
- ``failures``: what a failed provider call does (retry on the timer, or stop).
"""

from refunds.decisions.answers import decide
from refunds.decisions.failures import (
    FAILING_SINCE,
    FailureDecision,
    decide_failed_call,
    decide_failure,
    within_read_lag,
)
from refunds.decisions.holds import (
    address_stop,
    hold_before_confirm,
    hold_created_news,
    stop_before_confirm_call,
    terms_of,
)
from refunds.decisions.plan import (
    INTERNAL_TRANSITION_REFUSED,
    PROVIDER_AMOUNT_INVALID,
    PROVIDER_MISMATCH,
    STEP_FOR_STATE,
    Decision,
    NextTask,
    Outcome,
    Source,
    Timer,
    known_status,
    state_for_status,
)
from refunds.decisions.stops import HUMAN_STOPS, NOT_BULK_RETRIED

__all__ = [
    "FAILING_SINCE",
    "HUMAN_STOPS",
    "INTERNAL_TRANSITION_REFUSED",
    "NOT_BULK_RETRIED",
    "PROVIDER_AMOUNT_INVALID",
    "PROVIDER_MISMATCH",
    "STEP_FOR_STATE",
    "Decision",
    "FailureDecision",
    "NextTask",
    "Outcome",
    "Source",
    "Timer",
    "address_stop",
    "decide",
    "decide_failed_call",
    "decide_failure",
    "hold_before_confirm",
    "hold_created_news",
    "known_status",
    "state_for_status",
    "stop_before_confirm_call",
    "terms_of",
    "within_read_lag",
]
