"""The Crypto Refund Webhook: every refund status change POSTed, signed, to the merchant's URL.

Signed as MCE's webhook pages show: one header ``X-Signature: t=<epoch ms>,v0=<hex>``,
where ``v0`` is the lowercase hex HMAC-SHA256 of ``"{t}.{raw body}"`` keyed with
``webhook_secret``. The body is ``{"eventType", "notificationId", "data"}`` (plus top-level
``code``/``msg`` with ``webhook_code_msg``); ``data`` is the refund as Get shows it then.

What the contract assumes a real MCE does, with switches to make it worse on purpose: deliveries
delayed (``webhook_delay_ms``) and reordered (``webhook_jitter_ms``), delivered twice with the
same ``notificationId`` (``webhook_duplicate_rate``), never delivered (``webhook_drop_rate``:
polling must catch the change), and retried with exponential backoff on a non-2xx answer or a
connection error (``webhook_max_attempts``, ``webhook_retry_base_ms``).

Threading: :meth:`WebhookSender.on_status_change` runs under the state lock, so it only builds the
body (the refund exactly as Get shows it at that status) and pushes it on a heap ordered by due
time. A few daemon threads take due deliveries off the heap and POST them with ``http.client``,
outside every lock, so a slow or dead receiver never slows the provider endpoints. Deliveries for
one refund are never in flight at the same time, so without jitter and retries a receiver sees a
refund's statuses in order; jitter and retries reorder them, as on the real network.

A reset bumps a generation number: queued deliveries are forgotten at once, and the outcome of a
POST already on the wire is ignored (not counted, not retried).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sandbox.config import SandboxConfig
from sandbox.responses import dumps
from sandbox.state import Refund

logger = logging.getLogger("sandbox.webhooks")

#: MCE's one signature header (three webhook pages): ``t=<epoch ms>,v0=<64 lowercase hex>``.
SIGNATURE_HEADER = "X-Signature"
USER_AGENT = "mce-sandbox-webhooks/1.0"

#: Delivery threads: enough that a few slow receivers' timeouts do not stall everything else.
POOL_SIZE = 8
#: Past notifications kept for replay, and finished deliveries kept for GET /sandbox/webhooks.
MAX_HISTORY = 10_000
#: Backoff never waits longer than this between two attempts of one delivery.
MAX_BACKOFF_SECONDS = 60.0
#: How much of a receiver's answer is read (and thrown away) before closing the connection.
_MAX_RESPONSE_READ = 64 * 1024


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``"{timestamp}.{raw body}"`` with the webhook secret."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp_ms: int | None = None) -> str:
    """The ``X-Signature`` value: ``t=<epoch ms>,v0=<hex HMAC of "{t}.{body}">``."""
    t = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    return f"t={t},v0={sign(secret, t, body)}"


@dataclass(frozen=True)
class Notification:
    """One status change, as sent: the body bytes are fixed, so every resend is byte-identical."""

    notification_id: str
    refund_id: str
    client_reference: str
    status: int
    body: bytes
    changed_at: float = field(default_factory=time.time)  # when the status changed


@dataclass
class _Delivery:
    notification: Notification
    generation: int
    duplicate: bool = False
    replay: bool = False
    attempts: int = 0
    last_status: int | None = None
    last_sent_at: float | None = None


def _new_counters() -> dict[str, Any]:
    return {
        "queued": 0,
        "delivered": 0,
        "failed": 0,
        "dropped": 0,
        "duplicated": 0,
        "attempts": 0,
        "responses": {},
    }


class WebhookSender:
    """Queues notifications under the state lock; delivers them from its own daemon threads.

    ``config`` returns the config in force: each attempt reads the URL, secret, timeout and retry
    policy afresh (a fixed receiver or rotated secret applies to retries still pending).
    """

    def __init__(
        self,
        config: Callable[[], SandboxConfig],
        *,
        seed: int | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self._config = config
        self._seed = seed
        self._cond = threading.Condition(threading.Lock())
        self._rng = random.Random(seed)
        self._seq = 0
        self._generation = 0
        self._stopped = False
        self._pool_size = pool_size
        self._threads: list[threading.Thread] = []
        self._clear()

    def _clear(self) -> None:
        self._heap: list[tuple[float, int, _Delivery]] = []
        self._busy: set[str] = set()  # refund ids with a POST on the wire
        self._parked: dict[str, list[tuple[float, int, _Delivery]]] = {}
        self._history: OrderedDict[str, Notification] = OrderedDict()
        self._finished: deque[dict[str, Any]] = deque(maxlen=MAX_HISTORY)
        self._counters = _new_counters()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._threads or self._stopped:
                return
            self._threads = [
                threading.Thread(target=self._run, name=f"sandbox-webhook-{i}", daemon=True)
                for i in range(self._pool_size)
            ]
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the pool; a POST on the wire is left to its daemon thread (bounded by a timeout)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def reset(self) -> None:
        """Forget queued deliveries, history and counters; ignore the outcome of POSTs in flight."""
        with self._cond:
            self._generation += 1
            self._clear()
            self._rng = random.Random(self._seed)
            self._cond.notify_all()

    # --- producing (under the state lock: no I/O, no waiting) ---------------------------------

    def on_status_change(
        self, refund: Refund, _previous: int | None, config: SandboxConfig
    ) -> None:
        """The state's status listener: queue one notification (or drop or double it)."""
        if not config.sends_webhook_for(refund.status):
            return
        notification_id = str(uuid.uuid4())
        payload: dict[str, Any] = {
            "eventType": config.webhook_event_type,
            "notificationId": notification_id,
            "data": refund.to_wire(config, "webhook"),
        }
        if config.webhook_code_msg:
            # v2 examples carry the envelope's code/msg at the top level too (receivers ignore it).
            payload = {"code": 200, "msg": "success", **payload}
        notification = Notification(
            notification_id=notification_id,
            refund_id=refund.refund_id,
            client_reference=refund.client_reference,
            status=refund.status,
            body=dumps(payload),
        )
        with self._cond:
            self._remember(notification)
            if config.webhook_drop_rate and self._rng.random() < config.webhook_drop_rate:
                self._counters["dropped"] += 1
                return
            copies = 1
            if config.webhook_duplicate_rate and self._rng.random() < config.webhook_duplicate_rate:
                copies = 2
                self._counters["duplicated"] += 1
            for copy in range(copies):
                delay_ms = config.webhook_delay_ms
                if config.webhook_jitter_ms:
                    delay_ms += self._rng.uniform(0.0, config.webhook_jitter_ms)
                delivery = _Delivery(notification, self._generation, duplicate=copy > 0)
                self._push(delivery, delay_ms / 1000)

    def send_body(self, notification_id: str, key: str, body: bytes, copies: int = 1) -> None:
        """Queue a ready body (a payment webhook, ``sandbox.payment_webhooks``) ``copies`` times,
        byte-identical, at once. ``key`` orders deliveries as a refund id does (one payment's
        webhooks are never on the wire together) and names it in GET /sandbox/webhooks."""
        notification = Notification(notification_id, key, key, 0, body)
        with self._cond:
            self._remember(notification)
            for copy in range(copies):
                self._push(_Delivery(notification, self._generation, duplicate=copy > 0), 0.0)

    def replay(self, notification_id: str) -> bool:
        """Send a past notification again now (same id and body, fresh signature)."""
        with self._cond:
            notification = self._history.get(notification_id)
            if notification is None:
                return False
            self._push(_Delivery(notification, self._generation, replay=True), 0.0)
            return True

    def _remember(self, notification: Notification) -> None:
        self._history[notification.notification_id] = notification
        if len(self._history) > MAX_HISTORY:
            self._history.popitem(last=False)

    def _push(self, delivery: _Delivery, delay_seconds: float) -> None:
        # Caller holds the condition. The sequence number keeps equal due times in FIFO order.
        if delivery.attempts == 0:
            self._counters["queued"] += 1
        self._seq += 1
        heapq.heappush(self._heap, (time.monotonic() + delay_seconds, self._seq, delivery))
        self._cond.notify()

    # --- reading ----------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """Totals since the last reset; ``pending`` is queued but neither delivered nor given up."""
        with self._cond:
            c = self._counters
            snapshot = {**c, "responses": dict(c["responses"])}
            snapshot["pending"] = c["queued"] - c["delivered"] - c["failed"]
            return snapshot

    def finished(self, prefix: str = "") -> list[dict[str, Any]]:
        """Finished deliveries (delivered or given up), oldest first, by clientReference prefix."""
        with self._cond:
            return [dict(d) for d in self._finished if d["clientReference"].startswith(prefix)]

    # --- delivering (pool threads, no lock held during I/O) ----------------------------------

    def _run(self) -> None:
        while True:
            delivery = self._next_due()
            if delivery is None:
                return
            status: int | None = None
            try:
                status = self._post(delivery)
            except Exception:
                # A pool thread must survive anything; the attempt counts as a connection error.
                logger.exception("sandbox webhook: unexpected error delivering")
            self._finish(delivery, status)

    def _next_due(self) -> _Delivery | None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    entry = heapq.heappop(self._heap)
                    refund_id = entry[2].notification.refund_id
                    if refund_id in self._busy:
                        # Its refund has a POST on the wire: wait for it, keep the refund's order.
                        self._parked.setdefault(refund_id, []).append(entry)
                        continue
                    self._busy.add(refund_id)
                    return entry[2]
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
            return None

    def _post(self, delivery: _Delivery) -> int | None:
        """One attempt: the HTTP status, or None for a connection error or timeout."""
        config = self._config()
        url = config.webhook_url
        if url is None:
            return None
        parts = urlsplit(url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        host = parts.hostname or ""
        conn = connection_class(host, parts.port, timeout=config.webhook_timeout_seconds)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        body = delivery.notification.body
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature_header(config.webhook_secret, body),
        }
        delivery.last_sent_at = time.time()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(_MAX_RESPONSE_READ)
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            logger.debug("sandbox webhook: POST %s failed: %s", url, exc)
            return None
        finally:
            conn.close()

    def _finish(self, delivery: _Delivery, status: int | None) -> None:
        config = self._config()
        refund_id = delivery.notification.refund_id
        with self._cond:
            self._busy.discard(refund_id)
            for entry in self._parked.pop(refund_id, []):
                heapq.heappush(self._heap, entry)
                self._cond.notify()
            if delivery.generation != self._generation:
                return  # reset while on the wire: forgotten
            delivery.attempts += 1
            delivery.last_status = status
            c = self._counters
            c["attempts"] += 1
            key = "error" if status is None else str(status)
            c["responses"][key] = c["responses"].get(key, 0) + 1
            if status is not None and 200 <= status < 300:
                c["delivered"] += 1
                self._record(delivery, "delivered")
            elif self._stopped or delivery.attempts >= config.webhook_max_attempts:
                c["failed"] += 1
                self._record(delivery, "failed")
                logger.info(
                    "sandbox webhook: gave up on %s after %d attempts (last %s)",
                    delivery.notification.notification_id,
                    delivery.attempts,
                    key,
                )
            else:
                backoff_ms = config.webhook_retry_base_ms * 2 ** (delivery.attempts - 1)
                self._push(delivery, min(backoff_ms / 1000, MAX_BACKOFF_SECONDS))

    def _record(self, delivery: _Delivery, outcome: str) -> None:
        notification = delivery.notification
        self._finished.append(
            {
                "notificationId": notification.notification_id,
                "cryptoRefundId": notification.refund_id,
                "clientReference": notification.client_reference,
                "status": notification.status,
                "outcome": outcome,
                "changed_at": notification.changed_at,
                "sent_at": delivery.last_sent_at,
                "delivered_at": time.time() if outcome == "delivered" else None,
                "attempts": delivery.attempts,
                "last_status": delivery.last_status,
                "duplicate": delivery.duplicate,
                "replay": delivery.replay,
            }
        )
