"""One webhook event as the receiver and the replay both read it: the body parsed, its family
told, its outcome named and recorded."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from refunds.context import Context
from refunds.decisions import NextTask
from refunds.errors import WebhookRejectedError

log = logging.getLogger("refunds.webhooks")

#: Refund event names (contract 6: the v2 pattern ``<domain>.<object>.updated.v2``). Routing is on
#: the payload (a ``data.cryptoRefundId``), not on these names; an unlisted name is only logged.
EVENT_TYPES = frozenset({"crypto.refund.updated", "crypto.refund.updated.v2"})  # assumed
ACTOR = "mce-webhook"


@dataclass(frozen=True)
class WebhookResult:
    #: applied | duplicate | conflict | stale | parked | ignored | unmatched | contradiction |
    #: mismatch | anomaly | payment (a payment webhook, through the KYT intake)
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


def mark(p: Context, nid: str, outcome: str, ref: str | None) -> None:
    """Record how the stored event ended, and count it."""
    p.events.mark(nid, outcome, ref)
    p.stats.record_webhook(outcome)
