"""Early webhooks: applied when their refund can take them, parked until it can, replayed after
every step and operator action; kept, never dropped.

An event for a refund we do not know yet (or cannot take yet: still ``received``) is parked under
its reference. Parking checks, in the same Redis script, that the record is still the version the
event was tried against; if it moved, the event is tried again instead, so none is parked after
the last replay. A replay takes each parked event out (of concurrent replays exactly one takes
it) and applies it; an event whose replay fails is marked with its error and parked again, so a
failure (a Redis blip, a record that kept moving) delays it to the next replay and never loses
it, and the other parked events are still replayed.
"""

from __future__ import annotations

import logging
from typing import Any

from config.settings import Settings
from refunds.context import Context
from refunds.errors import TransitionError, WebhookRejectedError
from refunds.mce.client import MceClient
from refunds.models import now
from refunds.ops.counters import Stats
from refunds.store.events import EventStore
from refunds.store.ledger import Ledger
from refunds.webhooks.apply import Early, apply_once, reference_of, refund_of
from refunds.webhooks.event import WebhookResult, mark, parse

log = logging.getLogger("refunds.webhooks")

_TRIES = 5  # reads of a record that a concurrent poll or step keeps moving


def apply_event(p: Context, nid: str, data: dict[str, Any]) -> WebhookResult:
    """Apply one stored event's refund object to the ledger, or park it until the refund can take
    it (also used to replay parked ones).

    Whatever found the record (its ``cryptoRefundId``, else the clientReference the object
    names), ``decisions.decide`` compares both: an id that belongs to reference A in an event
    naming reference B, or news naming another id than the record's, is a mismatch that stops the
    refund for a human (``PROVIDER_MISMATCH``, never adopted). An object whose id is unknown and
    that names no clientReference is kept as "unmatched" for reconciliation.
    """
    refund = refund_of(data)
    ref = reference_of(p, refund)
    if not ref:
        log.warning(
            "webhook kept unmatched: refund %s names no clientReference",
            refund.crypto_refund_id,
            extra={"refund_id": refund.crypto_refund_id},
        )
        return WebhookResult("unmatched")
    for _ in range(_TRIES):
        outcome = apply_once(p, ref, refund)
        if isinstance(outcome, WebhookResult):
            return outcome
        if isinstance(outcome, Early):
            parked = _park(p, nid, ref, outcome.version, outcome.why)
            if parked is not None:
                return parked
    raise TransitionError(ref, None, "?", "record kept moving; MCE will deliver again")


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
    cannot apply is parked again; one whose replay raised is marked with its error, logged,
    counted and parked again (:func:`_keep_parked`), and the rest are still replayed. Cheap when
    nothing is parked (one EXISTS)."""
    results: list[WebhookResult] = []
    if not p.events.has_parked(ref):
        return results
    for nid in p.events.parked(ref):
        raw = p.events.unpark(ref, nid)
        if raw is None:
            continue
        try:
            _, _, data = parse(raw.encode())
            result = apply_event(p, nid, data)
        except Exception as exc:  # noqa: BLE001 - any failure: the event is kept, not lost
            _keep_parked(p, nid, ref, exc)
            continue
        mark(p, nid, result.outcome, ref)
        results.append(result)
    return results


def _keep_parked(p: Context, nid: str, ref: str, exc: Exception) -> None:
    """A parked event whose replay raised: its error on the stored event, counted, logged, and
    the event parked again for the next replay (against the record as it is now, like any park).

    A stored body that is no refund event at all (it cannot have been parked by this code) is
    not parked again: it would fail every replay; it stays stored with its error.
    """
    error = f"{type(exc).__name__}: {exc}"
    extra = {"client_reference": ref, "notification_id": nid}
    try:
        p.events.mark_error(nid, error)
        p.stats.record_webhook("error")
        if isinstance(exc, WebhookRejectedError):
            log.error("parked webhook cannot be applied: %s; not parked again", error, extra=extra)
            return
        for _ in range(_TRIES):
            record = p.ledger.find(ref)
            if p.events.park(nid, ref, now(), None if record is None else record.version):
                log.error("parked webhook failed to replay (%s); parked again", error, extra=extra)
                return
    except Exception:  # Redis is failing too: say so, loudly
        log.exception(
            "parked webhook failed to replay (%s) and could not be kept", error, extra=extra
        )
        return
    log.error(
        "parked webhook failed to replay (%s); its record kept moving, not parked again",
        error,
        extra=extra,
    )


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
