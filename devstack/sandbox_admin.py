"""The one client of the sandbox's admin API (``/sandbox/...``), for tests, benchmarks and chaos.

The admin API is the simulator's own (see ``sandbox/admin.py``): it sets switches (faults,
latency, webhook target, ...), flags payments as refundable, revokes tokens, reads counters and
resets everything. Switches pass through as given, so a switch the sandbox gains needs no change
here: ``admin.configure(error_rates={"503": 0.1})``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import requests

# A prefix no clientReference starts with: counters without the per-reference effects (one entry
# per refund, which a benchmark of thousands does not want to download).
NO_EFFECTS = "\x00"
FLAG_CHUNK = 10_000


class SandboxAdmin:
    """``/sandbox/*`` of one simulator at ``url`` (``http://127.0.0.1:PORT``).

    ``defaults`` are switches every ``reset`` starts from (the tests' fast processing, say); the
    switches given to ``reset`` win over them. Every call raises ``requests.HTTPError`` on a
    non-2xx answer (a switch the sandbox does not know is its 400).
    """

    def __init__(
        self, url: str, *, defaults: Mapping[str, Any] | None = None, timeout: float = 5.0
    ) -> None:
        self.url = url.rstrip("/")
        self.defaults = dict(defaults or {})
        self.timeout = timeout
        self.http = requests.Session()

    def _post(self, path: str, body: Any = None) -> Any:
        r = self.http.post(self.url + path, json=body, timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        r = self.http.get(self.url + path, params=params, timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def healthy(self) -> bool:
        """True once the simulator answers its health check (readiness)."""
        try:
            return bool(self.http.get(self.url + "/sandbox/healthz", timeout=1).ok)
        except requests.RequestException:
            return False

    def reset(self, **switches: Any) -> Any:
        """Forget every refund, token, counter and delivery; config = defaults + ``switches``."""
        return self._post("/sandbox/reset", {**self.defaults, **switches})

    def configure(self, **switches: Any) -> Any:
        """Change only the given switches; returns the whole config as the sandbox now has it."""
        return self._post("/sandbox/config", switches)

    def config(self) -> Any:
        return self._get("/sandbox/config")

    def flag(self, txn_ids: Iterable[str], **fields: Any) -> None:
        """Make payments refundable (``fields``: amount, currency, outcome...), in posts of
        ``FLAG_CHUNK`` (a benchmark flags hundreds of thousands)."""
        chunk = FLAG_CHUNK
        batch: list[dict[str, Any]] = []
        for txn in txn_ids:
            batch.append({"originalTransactionType": 1, "originalTransactionId": txn, **fields})
            if len(batch) >= chunk:
                self._post("/sandbox/payments", {"payments": batch})
                batch = []
        if batch:
            self._post("/sandbox/payments", {"payments": batch})

    def flag_and_notify(self, payments: list[dict[str, Any]]) -> list[str]:
        """Flag payments and send each one's payment webhook (an item's ``webhook`` object:
        kytResult, kytType, shape, notificationId, participantCode, copies); answers the sent
        notificationIds (``sandbox.payment_webhooks``)."""
        return list(self._post("/sandbox/payments", {"payments": payments}).get("webhooks", []))

    def payment_webhooks(self, payments: list[dict[str, Any]]) -> list[str]:
        """Send payment webhooks without flagging the payments; answers their notificationIds."""
        return list(self._post("/sandbox/payments/webhooks", {"payments": payments})["webhooks"])

    def recorded_requests(self, operation: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The last requests per operation as the sandbox received them (credentials masked)."""
        params = {"operation": operation} if operation else None
        return dict(self._get("/sandbox/requests", params)["requests"])

    def revoke_tokens(self) -> Any:
        return self._post("/sandbox/revoke-tokens")

    def counters(self, prefix: str | None = None) -> Any:
        """Calls, responses, faults, tokens issued, webhooks; ``effects`` per clientReference
        starting with ``prefix`` (all of them when None; none with ``NO_EFFECTS``)."""
        return self._get("/sandbox/counters", {"prefix": prefix} if prefix else None)

    def calls(self) -> dict[str, int]:
        """Provider calls by operation since the last reset: ``{"create": 3, ...}``."""
        return {op: int(n) for op, n in self.counters(NO_EFFECTS)["calls"].items()}

    def effects(self, ref: str) -> dict[str, int]:
        """What the sandbox did for one clientReference: ``{"create": 1, "confirm": 1}``."""
        found = self.counters(ref)["effects"].get(ref, {})
        return {op: int(n) for op, n in found.items()}

    def webhook_deliveries(self, prefix: str = "") -> Any:
        return self._get("/sandbox/webhooks", {"prefix": prefix} if prefix else None)["deliveries"]

    def replay_webhook(self, notification_id: str) -> Any:
        return self._post("/sandbox/webhooks/replay", {"notificationId": notification_id})
