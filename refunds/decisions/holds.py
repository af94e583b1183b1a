"""The approval hold: the one rule that keeps a refund from Confirm until an operator approves it.

Two paths reach Confirm: news that makes a refund ``created`` (Create's answer, a look-up, a
webhook; ``refunds.decisions.answers``) and a Confirm task for a refund already in ``created``
(after an operator's retry, a slow Create, or ``REFUNDS_CONFIRM_INLINE=false``; the process that
sent it, an operator's CLI say, may not carry the thresholds, so the worker applies its own rule
again). Both ask :func:`approval_hold`, so the rule is written once: an approved refund is never
held again; otherwise the policy's thresholds decide, failing closed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from refunds.decisions.plan import Decision
from refunds.models import RefundRecord, State
from refunds.policy import Policy

THRESHOLD_REASON = "amount above the approval threshold (or not known)"


def approval_hold(
    record: RefundRecord,
    policy: Policy,
    *,
    amount: Any,
    currency: str | None,
    reason: str,
    note: str = "awaiting approval",
    fields: Mapping[str, Any] | None = None,
    level: int = logging.INFO,
) -> Decision | None:
    """The hold for ``record`` about to be confirmed for ``amount`` ``currency``, or None (go on).

    ``reason``: the history line; ``fields`` are written with the hold (the news that made the
    refund ``created``). A held refund is read slowly, so it cannot drift from the provider while
    it waits.
    """
    if record.approved_by or not policy.needs_approval(amount, currency):
        return None
    return Decision(
        "applied",
        State.AWAITING_APPROVAL,
        note,
        reason=reason,
        fields=dict(fields or {}),
        timer="set",
        due_in=policy.held_poll_seconds,
        level=level,
    )


def hold_before_confirm(record: RefundRecord, policy: Policy) -> Decision | None:
    """A Confirm task's hold for a refund in ``created``, by this worker's rule (None: confirm)."""
    return approval_hold(
        record,
        policy,
        amount=record.amount,
        currency=record.currency,
        reason=f"confirm: {THRESHOLD_REASON}, not approved",
        note="held for approval",
        level=logging.WARNING,
    )
