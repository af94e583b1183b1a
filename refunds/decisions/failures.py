"""What a failed provider call does to a refund: retried on the timer, or stopped for a human.

Pure, like the news decisions: the step classifies the error (transient, permanent, the read lag
of a Get just after Create), passes the jittered backoff it drew and the time, and writes the
:class:`~refunds.decisions.plan.Decision` that :func:`decide_failed_call` answers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refunds.decisions.plan import Decision
from refunds.models import RefundRecord, State
from refunds.policy import Policy

#: The key in ``last_error`` carrying when the current streak of transient failures began (epoch
#: seconds). Kept across the streak's failures; a success clears ``last_error`` and so the streak.
FAILING_SINCE = "failingSince"


@dataclass(frozen=True)
class FailureDecision:
    """What one failed provider call does to a refund (the verdict inside
    :func:`decide_failed_call`).

    ``retry``: back on the timer in ``delay`` seconds, in the same state; otherwise the refund
    stops in ``needs_attention`` with ``reason``. ``failing_since``: the streak's start, to store
    in ``last_error[FAILING_SINCE]``.
    """

    retry: bool
    delay: float
    failing_since: float
    reason: str


def decide_failure(
    policy: Policy,
    *,
    last_error: Mapping[str, Any] | None,
    retryable: bool,
    code: str,
    backoff: float,
    retry_after: float | None,
    now: float,
) -> FailureDecision:
    """Retry a failed call with backoff, or stop for a human.

    The give-up clock is time since the first failure of the current streak (``last_error``'s
    ``failingSince``; this failure starts a streak when there is none). Why not time in the
    working state: a refund the provider keeps in ``processing`` for a day, read successfully all
    along, must not be given up on at its first failed Get. Why not a count: polls, throttles and
    a fleet's retries during a 15-minute outage used up 25 attempts in minutes.

    ``backoff`` is the jittered delay for this attempt (the caller owns the random source);
    ``retry_after`` (the provider's ``Retry-After``) is honoured when longer. A non-retryable
    (permanent) error stops at once whatever the clock says.
    """
    previous = (last_error or {}).get(FAILING_SINCE)
    since = min(float(previous), now) if isinstance(previous, int | float) else now
    if not retryable:
        return FailureDecision(False, 0.0, since, f"provider refused: {code}")
    if policy.gives_up(since, now):
        return FailureDecision(
            False, 0.0, since, f"gave up after {now - since:.0f}s of failures: {code}"
        )
    return FailureDecision(True, max(backoff, retry_after or 0.0), since, "")


def within_read_lag(policy: Policy, record: RefundRecord, *, now: float) -> bool:
    """Whether a Get's not-found is still inside the provider's read lag after Create.

    The window (``REFUNDS_NOT_FOUND_GRACE_SECONDS``) runs from when the provider's refund id was
    first recorded, or, before that (the duplicate-reference look-up), from the Create attempt.
    """
    since = record.provider_seen_at or record.updated_at
    return now - since < policy.not_found_grace_seconds


def decide_failed_call(
    record: RefundRecord,
    policy: Policy,
    *,
    error: Mapping[str, Any],
    retryable: bool,
    code: str,
    attempts: int,
    backoff: float,
    retry_after: float | None,
    now: float,
) -> Decision:
    """The write plan for one failed call: ``error`` (``MceError.as_dict``) becomes ``last_error``
    with its streak's start, ``attempts`` the record's count; the refund stays where it is, due
    again after the backoff, or stops in ``needs_attention`` with its timer cleared.
    ``note``: "retry in N s" or "needs attention"; ``reason``: why it stopped."""
    verdict = decide_failure(
        policy,
        last_error=record.last_error,
        retryable=retryable,
        code=code,
        backoff=backoff,
        retry_after=retry_after,
        now=now,
    )
    fields = {
        "last_error": {**error, FAILING_SINCE: verdict.failing_since},
        "attempts": attempts,
    }
    if verdict.retry:
        return Decision(
            "applied",
            record.state,
            f"retry in {verdict.delay:.2f}s",
            fields=fields,
            timer="set",
            due_in=verdict.delay,
            level=logging.WARNING,
        )
    return Decision(
        "applied",
        State.NEEDS_ATTENTION,
        "needs attention",
        reason=verdict.reason,
        fields=fields,
        timer="clear",
        code=code,
        level=logging.ERROR,
    )
