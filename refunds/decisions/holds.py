"""The gate before Confirm: what keeps a refund from Confirm (the approval hold today).

Two paths reach Confirm: news that makes a refund ``created`` (Create's answer, a look-up, a
webhook; :func:`hold_created_news`, asked by ``refunds.decisions.answers``) and a Confirm task
for a refund already in ``created`` (after an operator's retry, a slow Create, or
``REFUNDS_CONFIRM_INLINE=false``; :func:`hold_before_confirm`, asked by
``refunds.steps.operations``: the process that sent the task, an operator's CLI say, may not
carry the thresholds, so the worker applies its own rule again). Both pass through
:func:`_gate`, the one place for every check before Confirm: a check added there holds every path.

The approval rule: an approved refund is never held again; otherwise the policy's thresholds
decide, failing closed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from refunds.decisions.plan import LABEL, Decision, Source
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State
from refunds.policy import Policy

THRESHOLD_REASON = "amount above the approval threshold (or not known)"


def hold_created_news(
    record: RefundRecord,
    news: RefundData,
    policy: Policy,
    *,
    source: Source,
    fields: Mapping[str, Any],
) -> Decision | None:
    """The hold for news that makes ``record`` ``created`` (written with the news' ``fields``),
    or None: the refund goes on to Confirm. The amount and currency are the provider's when it
    says them."""
    return _gate(
        record,
        policy,
        amount=news.amount if news.amount is not None else record.amount,
        currency=news.currency or record.currency,
        reason=f"{LABEL[source]}: {THRESHOLD_REASON}",
        note="awaiting approval",
        fields=fields,
        level=logging.INFO,
    )


def hold_before_confirm(record: RefundRecord, policy: Policy) -> Decision | None:
    """A Confirm task's hold for a refund in ``created``, by this worker's rule (None: confirm)."""
    return _gate(
        record,
        policy,
        amount=record.amount,
        currency=record.currency,
        reason=f"confirm: {THRESHOLD_REASON}, not approved",
        note="held for approval",
        fields={},
        level=logging.WARNING,
    )


def _gate(
    record: RefundRecord,
    policy: Policy,
    *,
    amount: Any,
    currency: str | None,
    reason: str,
    note: str,
    fields: Mapping[str, Any],
    level: int,
) -> Decision | None:
    """Every check before Confirm, for ``record`` about to be confirmed for ``amount``
    ``currency``: the Decision that stops it here, or None (go on).

    ``reason``: the history line of a hold; ``fields`` are written with it (the news that made
    the refund ``created``). A held refund is read slowly, so it cannot drift from the provider
    while it waits.
    """
    if record.approved_by or not policy.needs_approval(amount, currency):
        return None
    return Decision(
        "applied",
        State.AWAITING_APPROVAL,
        note,
        reason=reason,
        fields=dict(fields),
        timer="set",
        due_in=policy.held_poll_seconds,
        level=level,
    )
