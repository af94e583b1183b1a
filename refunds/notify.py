"""Outcome notifications to merchant apps: a Celery task, a signed HTTP callback, or both.

When a refund becomes final, the same atomic ledger transition queues one outbox entry,
``outcome:{ref}``, in the outbox (``refunds.store.outbox``, a sorted set by due time), whatever
the writing process's settings: the web process applying a webhook, or an operator's CLI, may
carry no notification settings. The worker that delivers it fans it out, by its own settings,
into one entry per configured channel (``task:{ref}``, ``http:{ref}``), each retried on its own;
with no channel configured there, the outcome is dropped with a log line.

When MCE later contradicts the outcome the merchant was told (it completed a refund we cancelled,
or one that failed: ``refunds.decisions.stops``), the write that marks the conflict queues
``contradiction:{ref}`` the same way: the merchant gets a ``refund.contradiction`` notification
with the kind and MCE's evidence (status, refund id, transaction hash), with its own
``notificationId``.
The scheduler tick claims due entries under a lease, like refunds, and ``notifications.deliver``
delivers one. Delivery is at least once: an entry leaves the outbox only after the broker took the
message (a publish that raised nothing) or the merchant's endpoint answered 2xx; a crash anywhere
leaves it to come due again. A failing entry is retried with capped exponential backoff for
``REFUNDS_NOTIFY_GIVE_UP_AFTER`` (24 h by default), then kept as a dead letter that
``refunds notifications dead`` lists, the ``refunds_notifications_dead`` metric counts and
``refunds notifications replay`` puts back. The task channel publishes to
``REFUNDS_NOTIFY_QUEUE`` (default ``merchant.notifications``), which settings refuse to be one of
our own queues: our workers would take the message and reject it as an unknown task.
Every notification carries a stable ``notificationId`` (UUID v5 of the reference) to de-duplicate
on, and HTTP callbacks are signed like MCE's webhooks (``refunds.signing.sign``): HMAC-SHA256 over
``"{timestamp}.{body}"``.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from celery import Celery

from config.settings import Settings
from refunds.errors import CallbackRefusedError, RefundNotFoundError
from refunds.models import RefundRecord, iso
from refunds.money import format_money
from refunds.policy import CONTRADICTION_ENTRY, OUTCOME_ENTRY
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


def contradiction(record: RefundRecord) -> dict[str, Any] | None:
    """What merchant apps are told when MCE contradicts the outcome they were told: the state we
    keep, the kind and MCE's evidence. None: the record carries no conflict mark."""
    mark = record.conflict
    if not mark:
        return None
    ref = record.client_reference
    evidence = {
        k: mark.get(k) for k in ("kind", "providerStatus", "source", "cryptoRefundId", "txnHash")
    }
    return {
        "notificationId": str(uuid.uuid5(_NAMESPACE, f"contradiction:{ref}:{mark.get('kind')}")),
        "eventType": "refund.contradiction",
        "clientReference": ref,
        "state": str(record.state),
        "contradiction": {**evidence, "at": mark.get("at")},
        "message": (
            f"MCE reports this refund {mark.get('kind')!s}; the outcome you were told "
            f"({record.state}) is contradicted and an operator must look at it"
        ),
        "cryptoRefundId": record.crypto_refund_id,
        "amount": format_money(record.amount),
        "currency": record.currency,
    }


#: The suffix of a channel's entry for a contradiction (``task+contradiction:{ref}``).
_CONTRADICTION_SUFFIX = "+" + CONTRADICTION_ENTRY


@dataclass(frozen=True)
class Delivery:
    note: str
    done: bool


def retry_delay(
    settings: Settings,
    attempts: int,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds until attempt ``attempts + 1``: capped exponential backoff with equal jitter.

    ``base * 2 ** (attempts - 1)`` capped at ``notify_retry_max_seconds``, then between half and
    all of it, so entries refused together (a merchant endpoint that was down) do not all come
    back in the same second.
    """
    base: float = settings.notify_retry_base_seconds * 2.0 ** min(max(attempts - 1, 0), 30)
    delay = min(settings.notify_retry_max_seconds, base)
    return delay / 2 + rand() * delay / 2


class Notifier:
    """Delivers one outbox entry; reschedules it with backoff when the channel fails.

    An entry leaves the outbox only when the channel took it: the broker accepted the published
    message (no exception from a publish without Celery's own retries), or the endpoint answered
    2xx. A failure keeps it, due again after :func:`retry_delay`, until it has failed for
    ``notify_give_up_after`` seconds; then it becomes a dead letter, counted and replayable.
    """

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

    def channels(self) -> tuple[str, ...]:
        """The channels this worker's settings configure ("task", "http")."""
        configured = (("task", self.settings.notify_task), ("http", self.settings.callback_url))
        return tuple(channel for channel, setting in configured if setting)

    def deliver(self, member: str) -> Delivery:
        channel, _, ref = member.partition(":")
        if channel in (OUTCOME_ENTRY, CONTRADICTION_ENTRY):
            suffix = "" if channel == OUTCOME_ENTRY else _CONTRADICTION_SUFFIX
            return self._fan_out(member, ref, suffix)
        channel, payload = self._payload(channel, ref)
        if isinstance(payload, str):
            self._done(member)
            return Delivery(payload, True)
        if channel == "task":
            if not self.settings.notify_task:
                return self._retry_later(member, ref, "REFUNDS_NOTIFY_TASK is not set here")
            try:
                self._send_task(payload)
            except Exception as exc:  # noqa: BLE001 - any publish error: the broker did not take it
                return self._retry_later(member, ref, f"broker refused: {_reason(exc)}")
        elif channel == "http":
            if not self.settings.callback_url:
                return self._retry_later(member, ref, "REFUNDS_CALLBACK_URL is not set here")
            try:
                self._post(payload)
            except (requests.RequestException, CallbackRefusedError, OSError) as exc:
                return self._retry_later(member, ref, self._scrub(_reason(exc)))
        else:
            self._done(member)
            return Delivery(f"unknown channel {channel!r}: dropped", True)
        self._done(member)
        log.info(
            "%s delivered via %s", payload["eventType"], channel, extra={"client_reference": ref}
        )
        return Delivery(f"delivered via {channel}", True)

    def _payload(self, channel: str, ref: str) -> tuple[str, dict[str, Any] | str]:
        """The channel of an entry (``task``, ``http``) and what it carries: the outcome, or the
        contradiction for a ``+contradiction`` entry; a string: why there is nothing to send."""
        try:
            record = self.ledger.get(ref)
        except RefundNotFoundError:
            return channel, "unknown reference: dropped"
        if not channel.endswith(_CONTRADICTION_SUFFIX):
            return channel, outcome(record)
        told = contradiction(record)
        return channel.removesuffix(_CONTRADICTION_SUFFIX), (
            told if told is not None else "no contradiction on the record: dropped"
        )

    def _fan_out(self, member: str, ref: str, suffix: str) -> Delivery:
        """One entry per channel configured here, each delivered now and retried on its own.

        The channel entries are written (due one lease ahead, the tick's safety net) before the
        generic one leaves: a crash in between fans out again, which rewrites the same entries.
        """
        channels = self.channels()
        if not channels:
            self._done(member)
            log.log(
                logging.WARNING if suffix else logging.INFO,
                "%s not sent: no notification channel configured in this worker",
                member.partition(":")[0],
                extra={"client_reference": ref},
            )
            return Delivery("no notification channel configured: not sent", True)
        members = [f"{channel}{suffix}:{ref}" for channel in channels]
        for one in members:
            self.outbox.retry_in(one, self.settings.lease_seconds)
        self._done(member)
        notes = [f"{one}: {self.deliver(one).note}" for one in members]
        return Delivery("; ".join(notes), True)

    def _send_task(self, payload: dict[str, Any]) -> None:
        """Publish to the merchant's queue; returns only once the broker accepted the message.

        ``retry=False``: Celery's own publish retries would hide a refusal for seconds inside one
        attempt; the outbox is the retry. On Redis a publish is an LPUSH that returned; any error
        (connection, timeout, a refused write) raises, and the entry stays.
        """
        assert self.settings.notify_task  # noqa: S101 - checked by the caller
        timeout = self.settings.notify_publish_timeout
        self.celery.send_task(
            self.settings.notify_task,
            kwargs={"outcome": payload},
            queue=self.settings.notify_queue,
            retry=False,
            timeout=timeout,
            confirm_timeout=timeout,
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

    def _scrub(self, why: str) -> str:
        """The error without the callback URL's query or password (they may carry a credential):
        the reason is logged and kept with the dead letter."""
        parts = urlsplit(self.settings.callback_url or "")
        for secret in (parts.query, parts.password):
            if secret:
                why = why.replace(secret, "***")
        return why

    def _done(self, member: str) -> None:
        self.outbox.done(member)

    def _retry_later(self, member: str, ref: str, why: str) -> Delivery:
        failure = self.outbox.record_failure(member, why)
        give_up = self.settings.notify_give_up_after
        if failure.failing_for >= give_up:
            self.outbox.bury(member)
            log.error(
                "outcome notification given up after %d attempts over %.0fs: %s "
                "(refunds notifications dead / replay)",
                failure.attempts,
                failure.failing_for,
                why,
                extra={"client_reference": ref, "member": member},
            )
            return Delivery("given up", True)
        # Never sleep past the give-up time: the last attempt happens when the window closes.
        delay = min(retry_delay(self.settings, failure.attempts), give_up - failure.failing_for)
        self.outbox.retry_in(member, max(delay, 0.0))
        log.warning(
            "outcome notification failed (%s); retry in %.1fs",
            why,
            delay,
            extra={"client_reference": ref, "attempt": failure.attempts, "member": member},
        )
        return Delivery(f"retry in {delay:.1f}s", False)


def _reason(exc: BaseException) -> str:
    """One line naming the failure, for the log and the dead letter (never a response body)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
