"""MCE's Crypto Refund Webhook: verify, store raw, de-duplicate, apply (contract section 6).

The fast path to a final refund. Order matters (dj-stripe's lesson):
1. verify MCE's ``X-Signature: t=<epoch ms>,v0=<hex>`` over the raw bytes (HMAC-SHA256 of
   ``"{t}.{body}"``, constant-time compare, any of several ``v0`` for secret rotation, a symmetric
   5-minute tolerance in milliseconds): a forged or stale delivery changes nothing at all;
2. store the raw event under its ``notificationId`` before acting on it, in one atomic step that
   also claims it: of concurrent copies exactly one is applied, the rest answer "duplicate";
   the same id with another body is a "conflict" (logged, counted, not applied);
3. route on the payload: a ``data.cryptoRefundId`` makes it a refund event
   (``crypto.refund.updated`` or ``.v2``); other families (deposits, collections) are stored
   and "ignored";
4. apply it through the same decision as every provider answer (``decisions.decide`` via
   ``steps.apply_provider_update``): forward only, final states sticky, an older update never moves
   a refund back, another refund id stops the refund for a human, news contradicting a final state
   marks a conflict, a final one clears the poll timer and queues the outcome notifications;
5. the record is found by ``cryptoRefundId`` first (the ledger's ``rp:rid:`` index, written when a
   record first takes the id), then by ``clientReference``; an event whose id belongs to reference
   A but whose clientReference names B stops A for a human (``PROVIDER_MISMATCH``, both values);
6. an event for a refund we do not know yet (or cannot take yet: still ``received``) is parked under
   its reference and replayed after every step and operator action: kept, never dropped. Parking
   checks, in the same Redis script, that the record is still the version the event was tried
   against; if it moved, the event is tried again instead, so none is parked after the last replay.

A failed apply keeps its error on the stored event and answers 500, so MCE delivers it again.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from config.settings import Settings
from refunds.context import Context
from refunds.errors import TransitionError, WebhookRejectedError
from refunds.mce.client import MceClient
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, now
from refunds.ops.counters import Stats
from refunds.signing import sign
from refunds.steps import NextTask, StepResult, apply_provider_update
from refunds.store.events import EventStore
from refunds.store.ledger import Ledger

log = logging.getLogger("refunds.webhooks")

#: Refund event names (contract 6: the v2 pattern ``<domain>.<object>.updated.v2``). Routing is on
#: the payload (a ``data.cryptoRefundId``), not on these names; an unlisted name is only logged.
EVENT_TYPES = frozenset({"crypto.refund.updated", "crypto.refund.updated.v2"})  # assumed
SIGNATURE_HEADER = "X-Signature"  # fact: "t=<epoch ms>,v0=<64 hex>" on three MCE webhook pages
SIGNATURE_SCHEME = "v0"  # assumed (Stripe/Bridge convention): hex HMAC-SHA256 of "{t}.{raw body}"
#: ``t`` is epoch milliseconds in ASCII digits; 16 digits reach the year 318857, so more is junk.
_MAX_TIMESTAMP_DIGITS = 16
ACTOR = "mce-webhook"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``"{timestamp}.{raw body}"``, t exactly as in the header
    (the shared signer, ``refunds.signing.sign``)."""
    return sign(secret, timestamp, body)


def parse_signature_header(header: str) -> tuple[str | None, list[str]]:
    """(t, [v0 values]) from ``t=<ms>,v0=<hex>[,v0=<hex>...][,v1=...]``.

    Comma-separated ``key=value`` pairs, spaces around them ignored; several ``v0`` are kept (secret
    rotation), other schemes are ignored (a future ``v1``). Two different ``t`` values are malformed
    (400): which one was signed would be ambiguous.
    """
    timestamps: set[str] = set()
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            timestamps.add(value)
        elif key == SIGNATURE_SCHEME and value:
            candidates.append(value)
    if len(timestamps) > 1:
        raise WebhookRejectedError(400, "signature header has more than one timestamp")
    return (timestamps.pop() if timestamps else None), candidates


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance: float,
    at: float | None = None,
) -> None:
    """Check MCE's ``X-Signature`` over the raw body (contract section 6).

    ``tolerance`` is in seconds, applied symmetrically and computed in milliseconds; ``at`` is the
    current time in epoch seconds (tests pin it). Raises WebhookRejectedError: 401 when the
    header, its ``v0`` or a matching signature is missing; 400 when ``t`` is absent or not plain
    ASCII digits (``NaN``, ``1_796_030_000``, ``+1796030000``, ``1.79603e9``, Arabic-Indic
    digits: Python's ``int()`` accepts several of these, so it is never asked) or outside the
    tolerance.
    """
    if not header or not header.strip():
        raise WebhookRejectedError(401, f"missing {SIGNATURE_HEADER} header")
    timestamp, candidates = parse_signature_header(header)
    if timestamp is None:
        raise WebhookRejectedError(400, "signature header has no timestamp t")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookRejectedError(400, "timestamp t is not epoch milliseconds in ASCII digits")
    if not candidates:
        raise WebhookRejectedError(401, f"signature header has no {SIGNATURE_SCHEME} signature")
    expected = signature(secret, timestamp, body).encode()
    matched = False
    for candidate in candidates:  # every candidate compared, in constant time each
        matched |= hmac.compare_digest(expected, candidate.lower().encode("ascii", "replace"))
    if not matched:
        raise WebhookRejectedError(401, "signature does not match")
    now_ms = time.time_ns() // 1_000_000 if at is None else int(at * 1000)
    if abs(now_ms - int(timestamp)) > int(tolerance * 1000):
        raise WebhookRejectedError(400, "timestamp outside the tolerance (replayed or clock skew)")


@dataclass(frozen=True)
class WebhookResult:
    #: applied | duplicate | conflict | stale | parked | ignored | unmatched | contradiction |
    #: mismatch | anomaly
    outcome: str
    client_reference: str | None = None
    state: str | None = None
    next_task: NextTask | None = None

    @property
    def http_status(self) -> int:
        return 202 if self.outcome == "parked" else 200


def parse(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(notificationId, eventType, data) from a verified body, or a 400 WebhookRejectedError.

    JSON numbers are read as ``Decimal`` from their text (some MCE webhooks carry ``amount`` as a
    number); top-level ``code``/``msg`` (v2 examples) are ignored.
    """
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


def is_refund_event(kind: str, data: dict[str, Any]) -> bool:
    """A crypto refund event: routed on the payload (a ``data.cryptoRefundId``), not the name."""
    rid = data.get("cryptoRefundId")
    if not isinstance(rid, str) or not rid.strip():
        return False
    if kind not in EVENT_TYPES:
        log.info("webhook eventType %r not known; routed as a refund event by its payload", kind)
    return True


# --- receiving ----------------------------------------------------------------------------------


def receive_delivery(p: Context, body: bytes, headers: Mapping[str, str]) -> WebhookResult:
    """The HTTP face's entry: the raw body and all request headers; picking the signature header
    is this module's business, so a change of MCE's headers stays here."""
    return receive(p, body, headers.get(SIGNATURE_HEADER))


def receive(p: Context, body: bytes, signature_header: str | None) -> WebhookResult:
    """Handle one delivery end to end. Raises WebhookRejectedError for a 400/401 answer.

    Concurrent copies of one delivery: exactly one is "applied" (or whatever its apply says),
    the others "duplicate", all 2xx. The same notificationId with another body is a "conflict":
    logged at WARNING, counted, nothing applied (which body is MCE's truth is for a human, or a
    Get, to say).
    """
    verify(
        p.settings.webhook_secret.get_secret_value(),
        signature_header,
        body,
        tolerance=p.settings.webhook_tolerance_seconds,
    )
    nid, kind, data = parse(body)
    # A first delivery, or a repeat of one that failed or was abandoned (this one finishes it).
    stored = p.events.store(nid, body, now())
    ref = data.get("clientReference") if isinstance(data.get("clientReference"), str) else None
    if stored == "duplicate":
        p.stats.record_webhook("duplicate")
        return WebhookResult("duplicate", ref)
    if stored == "conflict":
        log.warning(
            "webhook conflict: notificationId %s seen before with another body; not applied",
            nid,
            extra={"client_reference": ref, "notification_id": nid},
        )
        p.stats.record_webhook("conflict")
        return WebhookResult("conflict", ref)
    if not is_refund_event(kind, data):
        # Other families (deposits, collections): kept for reconciliation, never applied.
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
    """Apply one stored event's refund object to the ledger (also used to replay parked ones).

    The record is found by the object's ``cryptoRefundId`` first
    (``Ledger.reference_of_refund_id``), then by its clientReference. Whatever found it,
    ``decisions.decide`` compares both: an id that belongs to reference A in an event naming
    reference B, or news naming another id than the record's, is a mismatch that stops the refund
    for a human (``PROVIDER_MISMATCH``, never adopted). An object whose id is unknown and that
    names no clientReference is kept as
    "unmatched" for reconciliation.
    """
    try:
        refund = RefundData.model_validate(data)
    except ValidationError:
        raise WebhookRejectedError(400, "data is not a refund object") from None
    ref = _reference_of(p, refund)
    if not ref:
        log.warning(
            "webhook kept unmatched: refund %s names no clientReference",
            refund.crypto_refund_id,
            extra={"refund_id": refund.crypto_refund_id},
        )
        return WebhookResult("unmatched")
    for _ in range(5):  # a concurrent poll or step may move the record between read and write
        record = p.ledger.find(ref)
        if record is None:
            parked = _park(p, nid, ref, None, "unknown refund")
            if parked is not None:
                return parked
            continue
        try:
            result: StepResult = apply_provider_update(
                p, record, refund, source="webhook", actor=ACTOR
            )
        except TransitionError as exc:
            if exc.why == "not an allowed transition":
                parked = _park(p, nid, ref, record.version, f"cannot apply in {record.state} yet")
                if parked is not None:
                    return parked
            continue
        return _applied(ref, refund, record, result)
    raise TransitionError(ref, None, "?", "record kept moving; MCE will deliver again")


def _reference_of(p: Context, refund: RefundData) -> str | None:
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


def _park(p: Context, nid: str, ref: str, version: int | None, why: str) -> WebhookResult | None:
    """Park ``nid`` for ``ref`` if its record is still at ``version`` (None: still absent);
    None when it moved meanwhile (the caller tries the event again)."""
    if not p.events.park(nid, ref, now(), version):
        return None
    log.info("webhook parked: %s", why, extra={"client_reference": ref})
    return WebhookResult("parked", ref)


def replay_parked(p: Context, ref: str) -> list[WebhookResult]:
    """Apply the events parked for ``ref``, oldest first; called after every step
    (``tasks.refunds.run_step``) and operator action (``refunds.actions``). An event that still
    cannot apply is parked again. Cheap when nothing is parked (one EXISTS)."""
    results: list[WebhookResult] = []
    if not p.events.has_parked(ref):
        return results
    for nid in p.events.parked(ref):
        raw = p.events.unpark(ref, nid)
        if raw is None:
            continue
        _, _, data = parse(raw.encode())
        result = apply_event(p, nid, data)
        _mark(p, nid, result.outcome, ref)
        results.append(result)
    return results


def replay_with(ledger: Ledger, settings: Settings, ref: str) -> list[WebhookResult]:
    """``replay_parked`` for callers that hold a ledger and settings but no Context (operator
    actions from the CLI or HTTP). Applying news never calls the provider, so the Context built
    here has a client that is never used."""
    if not EventStore.of(ledger).has_parked(ref):
        return []
    stats = Stats.of(ledger)
    context = Context(
        settings=settings, ledger=ledger, client=MceClient(settings, stats=stats), stats=stats
    )
    return replay_parked(context, ref)
