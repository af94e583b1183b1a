"""The gate before Confirm: what keeps a refund from Confirm (the approval hold today).

Two paths reach Confirm: news that makes a refund ``created`` (Create's answer, a look-up, a
webhook; :func:`hold_created_news`, asked by ``refunds.decisions.answers``) and a Confirm task
for a refund already in ``created`` (after an operator's retry, a slow Create, or
``REFUNDS_CONFIRM_INLINE=false``; :func:`hold_before_confirm`, asked by
``refunds.steps.operations``: the process that sent the task, an operator's CLI say, may not
carry the thresholds, so the worker applies its own rule again). Both pass through
:func:`_gate`, the one place for every check before Confirm: a check added there holds every path.

The checks, in order:
- the refund address must be valid for the refund's chain (``refunds.addresses``), once the chain
  is known (the Create answer's ``blockchain``): otherwise the refund stops in ``needs_attention``
  with ``ADDRESS_INVALID``, kept for a human, and Confirm is never sent;
- the approval rule: an approved refund is never held again; otherwise the policy's thresholds
  decide, failing closed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from refunds.addresses import ADDRESS_INVALID, problem_for_chain
from refunds.decisions.plan import LABEL, Decision, Source
from refunds.decisions.stops import stop_error
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
        blockchain=news.blockchain or record.blockchain,
        when=LABEL[source],
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
        blockchain=record.blockchain,
        when="before Confirm",
        amount=record.amount,
        currency=record.currency,
        reason=f"confirm: {THRESHOLD_REASON}, not approved",
        note="held for approval",
        fields={},
        level=logging.WARNING,
    )


def address_stop(
    record: RefundRecord, blockchain: str | None, fields: Mapping[str, Any], *, when: str
) -> Decision | None:
    """Stop a refund whose address is not one of ``blockchain``'s before Confirm sends money to
    it (``ADDRESS_INVALID``, kept for a human: cancel it, and submit the payment again under a
    new reference with the right address). None: no address, no known chain, or a valid one.

    Also asked right before a resumed Confirm call (``steps.operations``), so that a record that
    reached ``confirming`` some other way (an older release, an operator) still never sends it.
    """
    address = record.refund_address
    problem = problem_for_chain(address, blockchain) if address else None
    if problem is None:
        return None
    return Decision(
        "anomaly",
        State.NEEDS_ATTENTION,
        "refund address invalid for its chain",
        reason=f"{when}: {ADDRESS_INVALID}",
        fields={
            **fields,
            "last_error": stop_error(
                ADDRESS_INVALID,
                f"refundAddress: {problem}",
                "confirm",
                field="refundAddress",
                blockchain=blockchain,
            ),
            "attempts": 0,
        },
        timer="clear",
        code=ADDRESS_INVALID,
        level=logging.ERROR,
    )


def _gate(
    record: RefundRecord,
    policy: Policy,
    *,
    blockchain: str | None,
    when: str,
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
    invalid = address_stop(record, blockchain, fields, when=when)
    if invalid is not None:
        return invalid
    if record.approved_by or not policy.needs_approval(amount, currency, record.participant):
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
