"""MCE's Crypto Refund Webhook: verify, store raw, de-duplicate, apply (contract section 6).

The fast path to a final refund. Order matters (dj-stripe's lesson):
1. verify the signature over the raw bytes (HMAC-SHA256 of ``"{timestamp}.{body}"``, constant-time
   compare) and the timestamp's freshness: a forged or stale delivery changes nothing at all;
2. store the raw event under its ``notificationId`` before acting on it (``HSETNX``: the first
   delivery wins, repeats are answered "duplicate" and change nothing);
3. apply it through the same decision as every provider answer (``decisions.decide`` via
   ``steps.apply_provider_update``): forward only, final states sticky, an older update never moves
   a refund back, another refund id stops the refund for a human, news contradicting a final state
   marks a conflict, a final one clears the poll timer and queues the outcome notifications;
4. an event for a refund we do not know yet (or cannot take yet: still ``received``) is parked under
   its clientReference and replayed by the create step once the refund exists: kept, never dropped.

A failed apply keeps its error on the stored event and answers 500, so MCE delivers it again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from refunds.context import Context
from refunds.errors import TransitionError, WebhookRejectedError
from refunds.mce.schemas import RefundData
from refunds.models import now
from refunds.steps import NextTask, StepResult, apply_provider_update

log = logging.getLogger("refunds.webhooks")

EVENT_TYPE = "crypto.refund.updated"  # assumed (contract section 6)
TIMESTAMP_HEADER = "X-MCE-Timestamp"  # assumed
SIGNATURE_HEADER = "X-MCE-Signature"  # assumed
EVENT_TTL = 30 * 24 * 3600  # raw events are kept a month for replays and audits
ACTOR = "mce-webhook"


def event_key(notification_id: str) -> str:
    return f"rp:wh:{notification_id}"


def parked_key(ref: str) -> str:
    return f"rp:wh:parked:{ref}"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


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
    # applied | duplicate | stale | parked | ignored | contradiction | mismatch | anomaly
    outcome: str
    client_reference: str | None = None
    state: str | None = None
    next_task: NextTask | None = None

    @property
    def http_status(self) -> int:
        return 202 if self.outcome == "parked" else 200


def parse(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(notificationId, eventType, data) from a verified body, or a 400 WebhookRejectedError."""
    try:
        # Amounts sent as JSON numbers are read as exact Decimals from the raw text, never float.
        event = json.loads(body, parse_float=Decimal, parse_constant=Decimal)
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
    key = event_key(nid)
    redis = p.ledger.redis
    if not redis.hsetnx(key, "body", body.decode("utf-8", errors="replace")):
        status = redis.hget(key, "status")
        if status not in ("received", "error"):
            p.stats.record_webhook("duplicate")
            return WebhookResult("duplicate", data.get("clientReference"))
        # The first delivery of this event failed half-way: this repeat finishes the job.
    redis.hset(key, mapping={"status": "received", "received_at": repr(now())})
    redis.expire(key, EVENT_TTL)
    if kind != EVENT_TYPE:
        _mark(p, key, "ignored", None)
        return WebhookResult("ignored")
    try:
        result = apply_event(p, nid, data)
    except Exception as exc:
        redis.hset(key, mapping={"status": "error", "error": f"{type(exc).__name__}: {exc}"})
        p.stats.record_webhook("error")
        raise
    _mark(p, key, result.outcome, result.client_reference)
    return result


def _mark(p: Context, key: str, outcome: str, ref: str | None) -> None:
    p.ledger.redis.hset(key, "status", outcome)
    if ref:
        p.ledger.redis.hset(key, "ref", ref)
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
            result: StepResult = apply_provider_update(
                p, record, refund, source="webhook", actor=ACTOR
            )
        except TransitionError as exc:
            if exc.why == "not an allowed transition":
                return _park(p, nid, ref, f"cannot apply in state {record.state} yet")
            continue
        # applied | stale | contradiction (a final state contradicted: kept, the record marked
        # with a ``conflict``) | mismatch | anomaly (both: stopped for a human)
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
    raise TransitionError(ref, None, "?", "record kept moving; MCE will deliver again")


def _park(p: Context, nid: str, ref: str, why: str) -> WebhookResult:
    p.ledger.redis.zadd(parked_key(ref), {nid: now()})
    p.ledger.redis.expire(parked_key(ref), EVENT_TTL)
    log.info("webhook parked: %s", why, extra={"client_reference": ref})
    return WebhookResult("parked", ref)


def replay_parked(p: Context, ref: str) -> list[WebhookResult]:
    """Apply the events parked for ``ref``, oldest first (the create step calls this)."""
    key = parked_key(ref)
    ids = [str(i) for i in p.ledger.redis.zrange(key, 0, -1)]
    results = []
    for nid in ids:
        raw = p.ledger.redis.hget(event_key(nid), "body")
        p.ledger.redis.zrem(key, nid)
        if raw is None:
            continue
        _, _, data = parse(str(raw).encode())
        result = apply_event(p, nid, data)
        _mark(p, event_key(nid), result.outcome, ref)
        results.append(result)
    return results
