"""Outcome notifications to merchant apps: a Celery task, a signed HTTP callback, or both.

When a refund becomes final, the same atomic ledger transition queues one outbox entry per
configured channel (``task:{ref}``, ``http:{ref}``) in the outbox (``refunds.store.outbox``), a
sorted set by due time.
The scheduler tick claims due entries under a lease, like refunds, and ``notifications.deliver``
delivers one. Delivery is at least once: an entry leaves the outbox only after the broker took the
message or the merchant's endpoint answered 2xx; a crash anywhere leaves it to come due again.
Every notification carries a stable ``notificationId`` (UUID v5 of the reference) to de-duplicate
on, and HTTP callbacks are signed like MCE's webhooks (``refunds.signing.sign``): HMAC-SHA256 over
``"{timestamp}.{body}"``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests
from celery import Celery

from config.settings import Settings
from refunds.errors import CallbackRefusedError, RefundNotFoundError
from refunds.models import RefundRecord, iso
from refunds.money import format_money
from refunds.signing import sign
from refunds.store.keys import OUTBOX_ATTEMPTS as ATTEMPTS  # noqa: F401 - kept for importers
from refunds.store.keys import OUTBOX_DEAD as DEAD  # noqa: F401 - kept for importers
from refunds.store.ledger import Ledger
from refunds.store.outbox import Outbox

log = logging.getLogger("refunds.notify")

_NAMESPACE = uuid.UUID("0b7a3c52-3a43-4d0f-8d55-7b1de2d7c2a4")
SIGNATURE_HEADER = "X-Refunds-Signature"
TIMESTAMP_HEADER = "X-Refunds-Timestamp"
ID_HEADER = "X-Refunds-Notification-Id"


def outbox_members(settings: Settings, ref: str) -> list[str]:
    """The outbox entries a final refund gets, one per configured channel."""
    members = []
    if settings.notify_task:
        members.append(f"task:{ref}")
    if settings.callback_url:
        members.append(f"http:{ref}")
    return members


def notification_id(ref: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"outcome:{ref}"))


def outcome(record: RefundRecord) -> dict[str, Any]:
    """What merchant apps are told: the final state and the provider's ids and fields."""
    final_at = record.history[-1].at if record.history else record.updated_at
    return {
        "notificationId": notification_id(record.client_reference),
        "eventType": "refund.final",
        "clientReference": record.client_reference,
        "state": str(record.state),
        "cryptoRefundId": record.crypto_refund_id,
        "txnHash": record.txn_hash,
        "amount": format_money(record.amount),
        "currency": record.currency,
        "providerStatus": record.provider_status,
        "finalAt": iso(final_at),
    }


@dataclass(frozen=True)
class Delivery:
    note: str
    done: bool


class Notifier:
    """Delivers one outbox entry; reschedules it with backoff when the channel fails."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        celery: Celery,
        session: requests.Session | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.outbox = outbox or Outbox.of(ledger)
        self.celery = celery
        self.session = session or requests.Session()

    def deliver(self, member: str) -> Delivery:
        channel, _, ref = member.partition(":")
        try:
            record = self.ledger.get(ref)
        except RefundNotFoundError:
            self._done(member)
            return Delivery("unknown reference: dropped", True)
        payload = outcome(record)
        try:
            if channel == "task":
                self._send_task(payload)
            elif channel == "http":
                self._post(payload)
            else:
                self._done(member)
                return Delivery(f"unknown channel {channel!r}: dropped", True)
        except (requests.RequestException, CallbackRefusedError, OSError) as exc:
            return self._retry_later(member, ref, str(exc))
        self._done(member)
        log.info("outcome delivered via %s", channel, extra={"client_reference": ref})
        return Delivery(f"delivered via {channel}", True)

    def _send_task(self, payload: dict[str, Any]) -> None:
        assert self.settings.notify_task  # noqa: S101 - only queued when configured
        self.celery.send_task(
            self.settings.notify_task,
            kwargs={"outcome": payload},
            queue=self.settings.notify_queue,
        )

    def _post(self, payload: dict[str, Any]) -> None:
        assert self.settings.callback_url and self.settings.callback_secret  # noqa: S101
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        ts = int(time.time())
        signature = sign(self.settings.callback_secret.get_secret_value(), ts, body)
        response = self.session.post(
            self.settings.callback_url,
            data=body,
            timeout=self.settings.callback_timeout,
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: str(ts),
                SIGNATURE_HEADER: signature,
                ID_HEADER: payload["notificationId"],
            },
        )
        if not 200 <= response.status_code < 300:
            raise CallbackRefusedError(f"callback answered HTTP {response.status_code}")

    def _done(self, member: str) -> None:
        self.outbox.done(member)

    def _retry_later(self, member: str, ref: str, why: str) -> Delivery:
        attempts = self.outbox.failed(member)
        if attempts >= self.settings.callback_max_attempts:
            self.outbox.bury(member, time.time())
            log.error(
                "outcome notification given up after %d attempts: %s",
                attempts,
                why,
                extra={"client_reference": ref},
            )
            return Delivery("given up", True)
        delay = min(60.0, 0.5 * 2 ** (attempts - 1))
        self.outbox.retry_at(member, time.time() + delay)
        log.warning(
            "outcome notification failed (%s); retry in %.1fs",
            why,
            delay,
            extra={"client_reference": ref, "attempt": attempts},
        )
        return Delivery(f"retry in {delay:.1f}s", False)
