"""The simulated provider's memory: flagged payments, refunds, tokens, idempotency keys, counters.

Pure state and rules, no HTTP. One re-entrant lock guards every mutation, so concurrent calls for
the same ``clientReference`` or idempotency key resolve exactly as one provider would: one effect.
Nothing here sleeps; the HTTP layer injects latency outside the lock.

Refund statuses advance lazily (computed when read, from the times captured at confirm), and also
when :meth:`SandboxState.advance_all` is called: the server's ticker does that while webhooks are
on, so a status change is noticed (and POSTed) on time even if nobody calls Get. Either way each
change is applied exactly once, and :meth:`SandboxState.on_status_change` reports it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sandbox import problems
from sandbox.config import SandboxConfig
from sandbox.problems import ProviderError
from sandbox.responses import RawNumber

PARTICIPANT_CODE = "P000123"
FEE_AMOUNT = "0.5"
OUTCOME_STATUS = {"completed": 3, "failed": 4, "rejected": 5}
#: ``statusInfo`` labels (switch ``status_info``), after other v2 objects (2 PROCESSING, 4 FAILED).
STATUS_INFO = {1: "PENDING", 2: "PROCESSING", 3: "COMPLETED", 4: "FAILED", 5: "REJECTED"}
#: Requests remembered per operation for ``GET /sandbox/requests`` (what the client really sent).
MAX_RECORDED_REQUESTS = 50

#: Keys kept in the counters even before anything happened, so readers need no ``.get``.
COUNTED_OPERATIONS = ("token", "create", "confirm", "get")
COUNTED_FAULTS = ("429", "500", "502", "503", "lost", "slow", "rate_limited")

#: Bound on remembered expired tokens (kept only to tell "expired" from "unknown").
_MAX_TOKENS = 10_000

T = TypeVar("T")

#: ``(refund, previous status or None when created, the config in force)``, called under the lock.
StatusListener = Callable[["Refund", int | None, SandboxConfig], None]


@dataclass
class Payment:
    """An incoming payment MCE's KYT put in pending-refund, as flagged through the admin API."""

    transaction_type: int
    transaction_id: str
    amount: str
    currency: str
    blockchain: str
    outcome: str
    pending: bool = True
    # Where the payment came from: what a provider may echo as ``refundAddress`` (address_echo).
    source_address: str = field(default_factory=lambda: "T" + secrets.token_hex(16))


@dataclass
class Refund:
    """One crypto refund and the timeline it will follow once confirmed."""

    refund_id: str
    client_reference: str
    payment: Payment
    created_at: float
    updated_at: float
    txn_hash: str
    status: int = 1
    refund_address: str = ""
    confirmed_at: float | None = None
    # The schedule is captured at confirm so later config changes never move a refund backwards.
    phases: list[tuple[float, int]] = field(default_factory=list)
    phases_applied: int = 0
    participant_code: str = PARTICIPANT_CODE

    def to_wire(self, config: SandboxConfig | None = None, view: str = "answer") -> dict[str, Any]:
        """The contract's refund object (plus ``createdAt``/``updatedAt``, which clients ignore).

        ``view`` is "answer" (Create/Confirm), "get" or "webhook"; with ``config`` the switches
        that change what the provider says apply (other refund id on Get/webhooks, overrides,
        amounts as JSON numbers, ``statusInfo``).
        """
        other = (
            config is not None
            and view in ("get", "webhook")
            and config.names_other_id(self.client_reference)
        )
        txn_hash = other_hash(self.txn_hash) if other else self.txn_hash
        wire: dict[str, Any] = {
            "cryptoRefundId": other_id(self.refund_id) if other else self.refund_id,
            "originalTransactionType": self.payment.transaction_type,
            "originalTransactionId": self.payment.transaction_id,
            "participantCode": self.participant_code,
            "clientReference": self.client_reference,
            "status": self.status,
            "blockchain": self.payment.blockchain,
            "currency": self.payment.currency,
            "amount": self.payment.amount,
            "refundAddress": self.refund_address,
            "feeCurrency": self.payment.currency,
            "feeAmount": FEE_AMOUNT,
            "txnHash": txn_hash if self.status == 3 else "",
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
        }
        if config is None:
            return wire
        wire.update(config.overrides_for(self.client_reference))
        if config.status_info:
            wire["statusInfo"] = STATUS_INFO.get(self.status, "UNKNOWN")
        if config.amounts_as_numbers or (view == "webhook" and config.webhook_amounts_as_numbers):
            for name in ("amount", "feeAmount"):
                if _is_number_text(wire[name]):
                    wire[name] = RawNumber(wire[name])
        return wire


def other_id(refund_id: str) -> str:
    """The other refund id a confused provider names for a reference (switch other_refund_id)."""
    return "CRX" + hashlib.sha256(refund_id.encode()).hexdigest()[:17].upper()


def other_hash(txn_hash: str) -> str:
    return "0x" + hashlib.sha256(txn_hash.encode()).hexdigest()


_NUMBER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def _is_number_text(text: Any) -> bool:
    """JSON number syntax, or a non-finite literal (sent bare on purpose: the anomaly switch)."""
    if not isinstance(text, str):
        return False
    return text in ("NaN", "Infinity", "-Infinity") or _NUMBER_TEXT.fullmatch(text) is not None


@dataclass
class _IdempotencyRecord:
    fingerprint: str
    result: Any


@dataclass
class _Counters:
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED_OPERATIONS, 0))
    responses: dict[str, dict[str, int]] = field(
        default_factory=lambda: {op: {} for op in COUNTED_OPERATIONS}
    )
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED_FAULTS, 0))
    tokens_issued: int = 0
    effects: defaultdict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: {"create": 0, "confirm": 0})
    )


class SandboxState:
    """All provider state behind one lock. ``clock`` is wall time in seconds (tests may pin it)."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.config = config or SandboxConfig()
        self._listener: StatusListener | None = None
        self._clear()

    def _clear(self) -> None:
        self._payments: dict[tuple[int, str], Payment] = {}
        self._refunds: dict[str, Refund] = {}
        # Confirmed refunds with phases still ahead: all that advance_all has to look at.
        self._moving: dict[str, Refund] = {}
        self._by_reference: dict[str, Refund] = {}
        self._tokens: dict[str, float] = {}
        self._idempotency: dict[tuple[str, str], _IdempotencyRecord] = {}
        self._counters = _Counters()
        self._requests: dict[str, list[dict[str, Any]]] = {}

    # --- admin ------------------------------------------------------------------------------

    def reset(self, config: SandboxConfig | None = None) -> None:
        """Forget everything (payments, refunds, tokens, keys, counters); start from ``config``."""
        with self._lock:
            self._clear()
            self.config = config or SandboxConfig()

    def set_config(self, config: SandboxConfig) -> None:
        with self._lock:
            self.config = config

    def set_status_listener(self, listener: StatusListener | None) -> None:
        """Call ``listener(refund, previous, config)`` on every status change, under the lock."""
        with self._lock:
            self._listener = listener

    def flag_payments(self, payments: list[Payment]) -> int:
        """Put payments in pending-refund; re-flagging updates one and makes it pending again."""
        with self._lock:
            for payment in payments:
                self._payments[(payment.transaction_type, payment.transaction_id)] = payment
            return len(payments)

    def revoke_tokens(self) -> int:
        """Revoke every token; returns how many were still live."""
        with self._lock:
            now = self._clock()
            live = sum(1 for expires_at in self._tokens.values() if expires_at > now)
            self._tokens.clear()
            return live

    # --- counters ---------------------------------------------------------------------------

    def count_call(self, operation: str) -> object:
        """Count a call; answers the counters it was counted in, for its response and faults: a
        call still running when the sandbox is reset (a slow or delayed one) must not count its
        response into the next test's counters."""
        with self._lock:
            self._counters.calls[operation] = self._counters.calls.get(operation, 0) + 1
            return self._counters

    def count_response(self, operation: str, status: int, since: object | None = None) -> None:
        with self._lock:
            if since is not None and since is not self._counters:
                return
            by_status = self._counters.responses.setdefault(operation, {})
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def count_fault(self, kind: str, since: object | None = None) -> None:
        with self._lock:
            if since is not None and since is not self._counters:
                return
            self._counters.faults[kind] = self._counters.faults.get(kind, 0) + 1

    def counters(self, prefix: str = "") -> dict[str, Any]:
        """A snapshot; ``prefix`` keeps only effects whose clientReference starts with it."""
        with self._lock:
            c = self._counters
            return {
                "calls": dict(c.calls),
                "responses": {op: dict(by_status) for op, by_status in c.responses.items()},
                "faults": dict(c.faults),
                "tokens_issued": c.tokens_issued,
                "effects": {
                    ref: dict(effects)
                    for ref, effects in c.effects.items()
                    if ref.startswith(prefix)
                },
            }

    # --- requests as received -------------------------------------------------------------------

    def record_request(self, operation: str, entry: dict[str, Any]) -> None:
        """Remember what a client sent (body, query, content type), newest last, bounded."""
        with self._lock:
            kept = self._requests.setdefault(operation, [])
            kept.append(entry)
            del kept[:-MAX_RECORDED_REQUESTS]

    def requests(self, operation: str | None = None) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {
                op: [dict(e) for e in entries]
                for op, entries in self._requests.items()
                if operation is None or op == operation
            }

    # --- tokens -----------------------------------------------------------------------------

    def issue_token(self) -> tuple[str, float]:
        """Return a new bearer token and its lifetime in seconds."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            ttl = self.config.token_ttl_seconds
            if len(self._tokens) >= _MAX_TOKENS:
                self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + ttl
            self._counters.tokens_issued += 1
            return token, ttl

    def check_token(self, token: str | None) -> None:
        """Raise the contract's 401 unless ``token`` was issued, is not revoked and not expired."""
        with self._lock:
            expires_at = self._tokens.get(token) if token else None
            if expires_at is None:
                raise ProviderError(401, problems.AUTH_TOKEN_INVALID, "access token is not valid")
            if self._clock() >= expires_at:
                raise ProviderError(401, problems.AUTH_TOKEN_EXPIRED, "access token has expired")

    # --- idempotency ------------------------------------------------------------------------

    def once(self, scope: str, key: str, fingerprint: str, action: Callable[[], T]) -> T:
        """Run ``action`` at most once per (scope, key) and replay its result afterwards.

        ``action`` runs under the lock, so a concurrent retry with the same key waits and then
        replays instead of doing the work twice. The same key with a different ``fingerprint``
        (different parameters) is refused, as the contract says.
        """
        with self._lock:
            record = self._idempotency.get((scope, key))
            if record is not None:
                if record.fingerprint != fingerprint:
                    raise ProviderError(
                        422,
                        problems.IDEMPOTENCY_KEY_ALREADY_USED,
                        "idempotency-key was already used with different parameters",
                    )
                result: T = record.result
                return result
            result = action()
            self._idempotency[(scope, key)] = _IdempotencyRecord(fingerprint, result)
            return result

    # --- refunds ----------------------------------------------------------------------------

    def create_refund(
        self,
        transaction_type: int,
        transaction_id: str,
        client_reference: str,
        participant_code: str | None = None,
    ) -> dict[str, Any]:
        """Create Crypto Refund: one refund per pending payment and per clientReference.

        ``duplicate_mode`` "new" de-duplicates on the idempotency key only: a second Create for a
        reference (under a new key) makes a second refund of the same payment.
        """
        with self._lock:
            now = self._clock()
            cfg = self.config
            existing = self._by_reference.get(client_reference)
            second = False
            if existing is not None:
                if cfg.duplicate_mode == "reject":
                    raise ProviderError(
                        422,
                        problems.DUPLICATE_CLIENT_REFERENCE,
                        f"a refund already exists for clientReference {client_reference!r}",
                    )
                if cfg.duplicate_mode == "return":
                    return self._view(existing, now)
                second = existing.payment.transaction_id == transaction_id
            payment = self._payments.get((transaction_type, transaction_id))
            if payment is None or not (payment.pending or second):
                raise ProviderError(
                    422,
                    problems.CRYPTO_REFUND_NOT_PENDING,
                    f"no pending refund for transaction {transaction_id!r}"
                    f" of type {transaction_type}",
                )
            refund = Refund(
                refund_id="CR" + secrets.token_hex(10).upper(),
                client_reference=client_reference,
                payment=payment,
                created_at=now,
                updated_at=now,
                txn_hash="0x" + secrets.token_hex(32),
                participant_code=participant_code or PARTICIPANT_CODE,
            )
            if cfg.address_echo:
                refund.refund_address = payment.source_address
            if cfg.complete_unconfirmed_seconds is not None:
                # The provider completes it whatever the merchant does (e.g. after a cancel).
                refund.phases = [(now + cfg.complete_unconfirmed_seconds, 3)]
                self._moving[refund.refund_id] = refund
            payment.pending = False
            self._refunds[refund.refund_id] = refund
            self._by_reference[client_reference] = refund
            self._counters.effects[client_reference]["create"] += 1
            self.on_status_change(refund, None)
            return refund.to_wire(cfg)

    def confirm_refund(self, refund_id: str, refund_address: str | None) -> dict[str, Any]:
        """Confirm Crypto Refund: starts the on-chain timeline; a second confirm has no effect."""
        with self._lock:
            now = self._clock()
            refund = self._find(refund_id=refund_id)
            if refund.confirmed_at is not None or refund.status != 1:
                if self.config.confirm_mode == "reject":
                    raise ProviderError(
                        422,
                        problems.CRYPTO_REFUND_ALREADY_CONFIRMED,
                        f"refund {refund_id} is already confirmed",
                    )
                return self._view(refund, now)
            cfg = self.config
            # Async confirm: the answer (and Get) says 1 for confirm_async_seconds, then 2.
            started = now + cfg.confirm_async_seconds
            processing_end = started + cfg.processing_seconds
            refund.phases = [(started, 2)]
            refund.phases_applied = 0
            if cfg.unknown_status_seconds > 0:
                refund.phases.append((processing_end, cfg.unknown_status_value))
            final = OUTCOME_STATUS[refund.payment.outcome]
            refund.phases.append((processing_end + cfg.unknown_status_seconds, final))
            refund.confirmed_at = now
            refund.refund_address = refund_address or (
                refund.payment.source_address if cfg.address_echo else ""
            )
            self._moving[refund.refund_id] = refund
            self._counters.effects[refund.client_reference]["confirm"] += 1
            return self._view(refund, now)

    def get_refund(
        self, refund_id: str | None = None, client_reference: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            refund = self._find(refund_id=refund_id, client_reference=client_reference)
            now = self._clock()
            if now - refund.created_at < self.config.not_found_lag_seconds:
                # Read lag: the refund exists but this read replica has not seen it yet.
                raise ProviderError(
                    self.config.not_found_status,
                    problems.CRYPTO_REFUND_NOT_FOUND,
                    "no crypto refund found (yet)",
                )
            return self._view(refund, now, "get")

    def advance_all(self) -> None:
        """Apply every due status change now (the webhook ticker calls this every few ms).

        Only refunds with phases still ahead are visited, so a ticker stays cheap however many
        finished refunds a long benchmark leaves behind.
        """
        with self._lock:
            now = self._clock()
            for refund in list(self._moving.values()):
                self._advance(refund, now)

    def on_status_change(self, refund: Refund, previous: int | None) -> None:
        """Called, under the lock, on every refund status change (``previous`` None = created).

        ``refund.to_wire()`` here is exactly what Get returns at the new status. The listener (the
        webhook sender) must only enqueue and deliver from its own threads, never block the lock.
        """
        if self._listener is not None:
            self._listener(refund, previous, self.config)

    def _view(self, refund: Refund, now: float, view: str = "answer") -> dict[str, Any]:
        self._advance(refund, now)
        return refund.to_wire(self.config, view)

    def _advance(self, refund: Refund, now: float) -> None:
        while refund.phases_applied < len(refund.phases):
            at, status = refund.phases[refund.phases_applied]
            if at > now:
                return
            previous, refund.status, refund.updated_at = refund.status, status, at
            refund.phases_applied += 1
            self.on_status_change(refund, previous)
        self._moving.pop(refund.refund_id, None)

    def _find(self, refund_id: str | None = None, client_reference: str | None = None) -> Refund:
        refund = (
            self._refunds.get(refund_id)
            if refund_id
            else self._by_reference.get(client_reference or "")
        )
        if refund is None:
            what = (
                f"cryptoRefundId {refund_id!r}"
                if refund_id
                else f"clientReference {client_reference!r}"
            )
            raise ProviderError(
                self.config.not_found_status,
                problems.CRYPTO_REFUND_NOT_FOUND,
                f"no crypto refund with {what}",
            )
        return refund


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
