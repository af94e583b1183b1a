"""Receiving MCE's Crypto Refund Webhook: verify, store raw, de-duplicate, then apply
(contract section 6).

The fast path to a final refund. Order matters (dj-stripe's lesson):
1. verify the signature over the raw bytes (``refunds.webhooks.verify``): a forged or stale
   delivery changes nothing at all;
2. store the raw event under its ``notificationId`` before acting on it, in one atomic step that
   also claims it: of concurrent copies exactly one is applied, the rest answer "duplicate";
   the same id with another body is a "conflict" (logged, counted, not applied);
3. route on the payload: a ``data.cryptoRefundId`` makes it a refund event
   (``crypto.refund.updated`` or ``.v2``); a payment webhook (the deposit, collection and
   checkout families, ``REFUNDS_KYT_FAMILIES``) goes to the KYT intake (``refunds.kyt``: the
   detector and the rules); anything else is stored and "ignored";
4. apply it, or park it until its refund can take it (``refunds.webhooks.parking``).

A failed apply keeps its error on the stored event and answers 500, so MCE delivers it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from refunds.context import Context
from refunds.models import now
from refunds.webhooks.event import WebhookResult, is_refund_event, mark, parse
from refunds.webhooks.parking import apply_event
from refunds.webhooks.verify import SIGNATURE_HEADER, verify

log = logging.getLogger("refunds.webhooks")


def receive_delivery(p: Context, body: bytes, headers: Mapping[str, str]) -> WebhookResult:
    """The HTTP face's entry: the raw body and all request headers; picking the signature header
    is this package's business, so a change of MCE's headers stays here."""
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
    return accept(p, body)


def accept(p: Context, body: bytes) -> WebhookResult:
    """Store, de-duplicate, route and apply a delivery whose signature was verified (by
    :func:`receive`, or per credential by ``refunds.webhooks.credentials``)."""
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
        return _payment_event(p, nid, body)
    try:
        result = apply_event(p, nid, data)
    except Exception as exc:
        p.events.mark_error(nid, f"{type(exc).__name__}: {exc}")
        p.stats.record_webhook("error")
        raise
    mark(p, nid, result.outcome, result.client_reference)
    return result


def _payment_event(p: Context, nid: str, body: bytes) -> WebhookResult:
    """A stored event that is not a refund event: a payment webhook goes through the KYT intake
    (outcome "payment", its decision kept on the event); without a rules file, or for anything
    else, it is "ignored" (a payment webhook is still listed for ``refunds rules backtest``).
    A failure
    keeps its error on the event and answers 500, so MCE delivers it again."""
    payment = p.kyt.detect(body)
    if payment is None:
        mark(p, nid, "ignored", None)
        return WebhookResult("ignored")
    try:
        outcome = p.kyt.handle(payment, now())
    except Exception as exc:
        p.events.mark_error(nid, f"{type(exc).__name__}: {exc}")
        p.stats.record_webhook("error")
        raise
    if outcome is None:
        # No rules file: kept (and listed for a backtest), never acted on, as before.
        mark(p, nid, "ignored", None)
        return WebhookResult("ignored")
    ref = outcome.decision.reference if outcome.intent else None
    mark(p, nid, "payment", ref)
    return WebhookResult("payment", ref)
