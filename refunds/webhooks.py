"""MCE's Crypto Refund Webhook: verify, store raw, de-duplicate, apply (contract section 6).

The fast path to a final refund. Order matters (dj-stripe's lesson):
1. verify the signature over the raw bytes (HMAC-SHA256 of ``"{timestamp}.{body}"``, constant-time
   compare) and the timestamp's freshness: a forged or stale delivery changes nothing at all;
2. store the raw event under its ``notificationId`` before acting on it, in one atomic script
   (``refunds.store.events``: the first delivery wins, repeats of a handled event are answered
   "duplicate" and change nothing);
3. apply it through the same function as polling (``steps.apply_provider_update``): forward only,
   final states sticky, an older update never moves a refund back, a final one clears the poll
   timer and queues the outcome notifications;
4. an event for a refund we do not know yet (or cannot take yet: still ``received``) is parked under
   its clientReference and replayed by the create step once the refund exists: kept, never dropped.

A failed apply keeps its error on the stored event and answers 500, so MCE delivers it again.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from refunds.context import Context
from refunds.errors import TransitionError, WebhookRejectedError
from refunds.mce.schemas import RefundData
from refunds.models import now
from refunds.signing import sign
from refunds.steps import NextTask, StepResult, apply_provider_update

log = logging.getLogger("refunds.webhooks")

EVENT_TYPE = "crypto.refund.updated"  # assumed (contract section 6)
TIMESTAMP_HEADER = "X-MCE-Timestamp"  # assumed
SIGNATURE_HEADER = "X-MCE-Signature"  # assumed
ACTOR = "mce-webhook"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """MCE's webhook signature (the shared signer, ``refunds.signing.sign``)."""
    return sign(secret, timestamp, body)


def verify(
    secret: str,
    timestamp: str | None,
    sig: str | None,
    body: bytes,
    *,
    tolerance: float,
    at: float | None = None,
) -> None:
    """Raise WebhookRejectedError (401 bad or missing signature, 400 stale or malformed time)."""
    if not timestamp or not sig:
        raise WebhookRejectedError(401, "missing signature headers")
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected, sig.strip().lower()):
        raise WebhookRejectedError(401, "signature does not match")
    try:
        sent = float(timestamp)
    except ValueError:
        raise WebhookRejectedError(400, "timestamp is not a number") from None
    if abs((at if at is not None else time.time()) - sent) > tolerance:
        raise WebhookRejectedError(400, "timestamp outside the tolerance (replayed or clock skew)")


@dataclass(frozen=True)
class WebhookResult:
    outcome: str  # applied | duplicate | conflict | stale | parked | ignored
    client_reference: str | None = None
    state: str | None = None
    next_task: NextTask | None = None

    @property
    def http_status(self) -> int:
        return 202 if self.outcome == "parked" else 200


def parse(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(notificationId, eventType, data) from a verified body, or a 400 WebhookRejectedError."""
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejectedError(400, "body is not valid JSON") from None
    if not isinstance(event, dict):
        raise WebhookRejectedError(400, "body is not a JSON object")
    nid, kind, data = event.get("notificationId"), event.get("eventType"), event.get("data")
    if not isinstance(nid, str) or not nid.strip() or len(nid) > 128:
        raise WebhookRejectedError(400, "notificationId is missing or invalid")
    if not isinstance(kind, str):
        raise WebhookRejectedError(400, "eventType is missing")
    if not isinstance(data, dict):
        raise WebhookRejectedError(400, "data is not an object")
    return nid, kind, data


def receive(p: Context, body: bytes, timestamp: str | None, sig: str | None) -> WebhookResult:
    """Handle one delivery end to end. Raises WebhookRejectedError for a 400/401 answer."""
    verify(
        p.settings.webhook_secret.get_secret_value(),
        timestamp,
        sig,
        body,
        tolerance=p.settings.webhook_tolerance_seconds,
    )
    nid, kind, data = parse(body)
    # A first delivery, or a repeat of one that failed or was abandoned (this one finishes it).
    stored = p.events.store(nid, body, now())
    if stored == "duplicate":
        p.stats.record_webhook("duplicate")
        return WebhookResult("duplicate", data.get("clientReference"))
    if stored == "conflict":
        ref = data.get("clientReference")
        log.warning(
            "webhook conflict: notificationId %s seen before with another body; not applied",
            nid,
            extra={"client_reference": ref, "notification_id": nid},
        )
        p.stats.record_webhook("conflict")
        return WebhookResult("conflict", ref)
    if kind != EVENT_TYPE:
        _mark(p, nid, "ignored", None)
        return WebhookResult("ignored")
    try:
        result = apply_event(p, nid, data)
    except Exception as exc:
        p.events.mark_error(nid, f"{type(exc).__name__}: {exc}")
        p.stats.record_webhook("error")
        raise
    _mark(p, nid, result.outcome, result.client_reference)
    return result


def _mark(p: Context, nid: str, outcome: str, ref: str | None) -> None:
    p.events.mark(nid, outcome, ref)
    p.stats.record_webhook(outcome)


def apply_event(p: Context, nid: str, data: dict[str, Any]) -> WebhookResult:
    """Apply one stored event's refund object to the ledger (also used to replay parked ones)."""
    try:
        refund = RefundData.model_validate(data)
    except ValidationError:
        raise WebhookRejectedError(400, "data is not a refund object") from None
    ref = refund.client_reference
    if not ref:
        return WebhookResult("ignored")
    for _ in range(5):  # a concurrent poll or step may move the record between read and write
        record = p.ledger.find(ref)
        if record is None:
            return _park(p, nid, ref, "unknown refund")
        try:
            result: StepResult = apply_provider_update(p, record, refund, "webhook", actor=ACTOR)
        except TransitionError as exc:
            if exc.why == "not an allowed transition":
                return _park(p, nid, ref, f"cannot apply in state {record.state} yet")
            continue
        outcome = "applied" if result.record is not record else "stale"
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
    raise TransitionError(ref, None, "?", "record kept moving; MCE will deliver again")


def _park(p: Context, nid: str, ref: str, why: str) -> WebhookResult:
    p.events.park(nid, ref, now())
    log.info("webhook parked: %s", why, extra={"client_reference": ref})
    return WebhookResult("parked", ref)


def replay_parked(p: Context, ref: str) -> list[WebhookResult]:
    """Apply the events parked for ``ref``, oldest first (the create step calls this)."""
    results = []
    for nid in p.events.parked(ref):
        raw = p.events.unpark(ref, nid)
        if raw is None:
            continue
        _, _, data = parse(raw.encode())
        result = apply_event(p, nid, data)
        _mark(p, nid, result.outcome, ref)
        results.append(result)
    return results
