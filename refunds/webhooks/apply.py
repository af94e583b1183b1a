"""Applying one refund event to the ledger, once: through the same decision as every provider
answer (``steps.apply_provider_update``).

Forward only, final states sticky, an older update never moves a refund back, another refund id
stops the refund for a human, news contradicting a final state marks a conflict, a final one
clears the poll timer and queues the outcome notifications. The record is found by
``cryptoRefundId`` first (the ledger's refund-id index, written when a record first takes the
id), then by ``clientReference``. An event for a refund that cannot take it yet is answered
:class:`Early`: ``refunds.webhooks.parking`` parks it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from refunds.context import Context
from refunds.errors import TransitionError, WebhookRejectedError
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord
from refunds.steps import StepResult, apply_provider_update
from refunds.webhooks.event import ACTOR, WebhookResult

log = logging.getLogger("refunds.webhooks")


@dataclass(frozen=True)
class Early:
    """The refund cannot take the event yet: unknown (``version`` None) or in a state the news
    cannot move (still ``received``). Park it if the record is still at ``version``."""

    version: int | None
    why: str


def refund_of(data: dict[str, Any]) -> RefundData:
    """The event's refund object, or a 400 WebhookRejectedError."""
    try:
        return RefundData.model_validate(data)
    except ValidationError:
        raise WebhookRejectedError(400, "data is not a refund object") from None


def reference_of(p: Context, refund: RefundData) -> str | None:
    """The clientReference the event is for: the owner of its ``cryptoRefundId`` when the ledger
    knows that id, else the reference the object names; None when neither says.

    The id wins because it is MCE's own key; an object naming another reference than the id's
    owner is logged at ERROR here, and ``decisions.decide`` then stops the refund for a human.
    """
    by_id = p.ledger.reference_of_refund_id(refund.crypto_refund_id)
    if by_id and refund.client_reference and refund.client_reference != by_id:
        log.error(
            "webhook names clientReference %r but refund id %s is %r's",
            refund.client_reference,
            refund.crypto_refund_id,
            by_id,
            extra={"client_reference": by_id, "refund_id": refund.crypto_refund_id},
        )
    return by_id or refund.client_reference


def apply_once(p: Context, ref: str, refund: RefundData) -> WebhookResult | Early | None:
    """Read ``ref``'s record and apply ``refund`` to it: the outcome, :class:`Early` (park it),
    or None when the record moved between the read and the write (read it again)."""
    record = p.ledger.find(ref)
    if record is None:
        return Early(None, "unknown refund")
    try:
        result = apply_provider_update(p, record, refund, source="webhook", actor=ACTOR)
    except TransitionError as exc:
        if exc.why == "not an allowed transition":
            return Early(record.version, f"cannot apply in {record.state} yet")
        return None
    return _applied(ref, refund, record, result)


def _applied(
    ref: str, refund: RefundData, record: RefundRecord, result: StepResult
) -> WebhookResult:
    """The webhook's outcome for a step result, logged: applied | stale | contradiction (a final
    state contradicted: kept, the record marked with a ``conflict``) | mismatch | anomaly (both:
    stopped for a human). An "applied" that handed back the very record it was given wrote
    nothing, so it is reported as "stale"."""
    outcome = {"conflict": "contradiction"}.get(result.outcome, result.outcome)
    if outcome == "applied" and result.record is record:
        outcome = "stale"
    new_state = result.record.state if result.record else record.state
    log.info(
        "webhook %s: %s",
        outcome,
        result.note,
        extra={
            "client_reference": ref,
            "refund_id": refund.crypto_refund_id,
            "state": str(new_state),
            "provider_status": refund.status,
        },
    )
    return WebhookResult(outcome, ref, str(new_state), result.next_task)
