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
- the approval rule: an approved refund is not held again while what it approved (amount,
  currency, refund address, chain: ``approved_terms``) is what Confirm would confirm; a change
  of any of them holds it again, its approval withdrawn. A rule-made refund (KYT intake) is held
  whatever its amount (``refunds.kyt.approval``). Otherwise the policy's thresholds
  decide, failing closed.

Right before the Confirm call (``refunds.steps.operations``) :func:`stop_before_confirm_call`
asks the address and approval-terms checks once more: a refund approved straight into
``confirming`` passes no other gate, and news may have changed it since.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from refunds.addresses import ADDRESS_INVALID, problem_for_chain
from refunds.decisions.plan import LABEL, Decision, Source
from refunds.decisions.stops import stop_error
from refunds.kyt.approval import HOLD_REASON as KYT_HOLD_REASON
from refunds.kyt.approval import confirm_needs_person
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State
from refunds.money import format_money
from refunds.policy import Policy, exact_amount

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


def terms_of(
    record: RefundRecord, *, amount: Any, currency: str | None, blockchain: str | None
) -> dict[str, str | None]:
    """What a Confirm of ``record`` for ``amount`` ``currency`` on ``blockchain`` would confirm:
    the terms an approval records (``actions.approve``) and is compared with."""
    return {
        "amount": format_money(amount) if amount is not None else None,
        "currency": currency,
        "refundAddress": record.refund_address,
        "blockchain": blockchain,
    }


def changed_terms(record: RefundRecord, terms: Mapping[str, str | None]) -> list[str]:
    """The terms in which ``terms`` differ from what ``record``'s approval approved (amounts
    compared as numbers: "500.0" is "500.00"). Empty for a refund not approved, or approved
    before approvals recorded their terms."""
    approved = record.approved_terms
    if not record.approved_by or approved is None:
        return []
    changed = []
    for name, value in terms.items():
        before = approved.get(name)
        if name == "amount" and value is not None and before is not None:
            same = exact_amount(before) == exact_amount(value)
        else:
            same = before == value
        if not same:
            changed.append(name)
    return changed


def stop_before_confirm_call(record: RefundRecord, policy: Policy) -> Decision | None:
    """The checks asked right before a Confirm call (the address valid for its chain, the
    approval still for these terms): the Decision that stops it, or None (call)."""
    invalid = address_stop(record, record.blockchain, {}, when="before Confirm")
    if invalid is not None:
        return invalid
    return _approval_withdrawn(
        record,
        policy,
        amount=record.amount,
        currency=record.currency,
        blockchain=record.blockchain,
        when="before Confirm",
        fields={},
    )


def _approval_withdrawn(
    record: RefundRecord,
    policy: Policy,
    *,
    amount: Any,
    currency: str | None,
    blockchain: str | None,
    when: str,
    fields: Mapping[str, Any],
) -> Decision | None:
    """Hold an approved refund again when what Confirm would confirm is not what was approved
    (None: not approved, or the same terms). The approval is withdrawn; the history line names
    each changed term, approved and now."""
    terms = terms_of(record, amount=amount, currency=currency, blockchain=blockchain)
    changed = changed_terms(record, terms)
    if not changed:
        return None
    approved = record.approved_terms or {}
    shown = ", ".join(f"{n} {approved.get(n)!r} -> {terms[n]!r}" for n in changed)
    return Decision(
        "applied",
        State.AWAITING_APPROVAL,
        "approval withdrawn: approved terms changed",
        reason=f"{when}: approved by {record.approved_by} for other terms ({shown}); held again",
        fields={**fields, "approved_by": None, "approved_at": None, "approved_terms": None},
        timer="set",
        due_in=policy.held_poll_seconds,
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
    if record.approved_by:
        return _approval_withdrawn(
            record,
            policy,
            amount=amount,
            currency=currency,
            blockchain=blockchain,
            when=when,
            fields=fields,
        )
    # --- KYT intake: a rule-made refund waits for a person whatever its amount.
    if confirm_needs_person(record, create_needs_approval=policy.kyt_create_needs_approval):
        reason = f"{when}: {KYT_HOLD_REASON}"
    # --- end KYT intake
    elif not policy.needs_approval(amount, currency, record.participant):
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
