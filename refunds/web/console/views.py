"""What the console's pages show, read from the ledger: plain functions of (ledger, filters).

Each page reads what the CLI reads (``refunds stats``, ``list``, ``status``, ``notifications
dead``) through the store's own readers; nothing here writes. Lists are capped (``LIMIT``) and
say how many there were in all, so a page stays cheap with 100,000 refunds in flight.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from refunds import addresses
from refunds.actions import error_code, select_for_retry
from refunds.models import FINAL_STATES, RefundRecord, State, now
from refunds.money import format_money
from refunds.store.events import EventStore
from refunds.store.ledger import Ledger
from refunds.store.outbox import Outbox
from refunds.webhooks import ACTOR as WEBHOOK_ACTOR

LIMIT = 200
#: Search reads at most this many records when it has to look at every one (a ``txnHash``: the
#: ledger keeps no index of hashes), newest first.
SEARCH_SCAN_LIMIT = 20_000
CHANNELS = ("task", "http")
AGE_CHOICES = {"": 0.0, "5m": 300.0, "1h": 3600.0, "24h": 86400.0}


@dataclass(frozen=True)
class Listing:
    """Up to ``LIMIT`` records of a page and how many matched before the cap."""

    records: list[RefundRecord]
    total: int


def _age_floor(label: str) -> float:
    """Seconds of an age filter; unknown labels read as no filter (the form offers the choices)."""
    return AGE_CHOICES.get(label, 0.0)


@dataclass(frozen=True)
class Queue(Listing):
    """The needs-attention queue after its filters, and every code in it (the filter's choices)."""

    codes: list[str] = field(default_factory=list)


def needs_attention(ledger: Ledger, code: str = "", min_age: str = "") -> Queue:
    """Refunds stopped for a human, oldest stop first, filtered by their code and how long ago
    they stopped (a refund in needs_attention does not move, so ``updated_at`` is the stop).
    One read of the queue serves the list and the codes."""
    wanted = code.strip().upper()
    floor = _age_floor(min_age)
    at = now()
    queue = [
        r
        for r in ledger.get_many(ledger.references(State.NEEDS_ATTENTION))
        if r.state == State.NEEDS_ATTENTION
    ]
    found = [
        r
        for r in queue
        if (not wanted or (error_code(r) or "").upper() == wanted) and at - r.updated_at >= floor
    ]
    found.sort(key=lambda r: (r.updated_at, r.client_reference))
    codes = sorted({c for r in queue if (c := error_code(r))})
    return Queue(found[:LIMIT], len(found), codes)


def bulk_selection(ledger: Ledger, code: str = "", min_age: str = "") -> list[RefundRecord]:
    """What a bulk retry with the queue's filters takes: ``select_for_retry`` (the bulk retry of
    the CLI and ``POST /operator/retry``) by code, then the queue's age filter."""
    floor = _age_floor(min_age)
    at = now()
    return [
        r for r in select_for_retry(ledger, code=code.strip() or None) if at - r.updated_at >= floor
    ]


def in_state(ledger: Ledger, state: State) -> Listing:
    refs = ledger.references(state)
    records = [r for r in ledger.get_many(refs[:LIMIT]) if r.state == state]
    return Listing(sorted(records, key=lambda r: r.created_at), len(refs))


def held_since(record: RefundRecord) -> float:
    """When the refund was last held for approval (its creation time if the history says not)."""
    held = [h.at for h in record.history if h.to_state == State.AWAITING_APPROVAL]
    return held[-1] if held else record.created_at


def conflicts(ledger: Ledger) -> Listing:
    refs = ledger.conflicted()
    return Listing(ledger.get_many(refs[:LIMIT]), len(refs))


@dataclass(frozen=True)
class Notification:
    """One outcome notification of a refund: pending in the outbox or given up on (dead)."""

    member: str
    channel: str
    status: str  # "pending" or "dead"
    attempts: int
    error: str
    at: float | None  # due (pending) or given up (dead)


def notifications_of(ledger: Ledger, ref: str) -> list[Notification]:
    outbox = Outbox.of(ledger)
    found: list[Notification] = []
    for channel in CHANNELS:
        member = f"{channel}:{ref}"
        due = outbox.due_at(member)
        if due is not None:
            found.append(
                Notification(
                    member,
                    channel,
                    "pending",
                    outbox.attempts(member),
                    outbox.last_error(member) or "",
                    due,
                )
            )
    found.extend(
        Notification(d.member, d.channel, "dead", d.attempts, d.error, d.at)
        for d in outbox.dead_letters()
        if d.client_reference == ref
    )
    return found


@dataclass(frozen=True)
class StoredWebhook:
    notification_id: str
    status: str
    received_at: float | None
    body: str


def parked_webhooks(ledger: Ledger, ref: str) -> list[StoredWebhook]:
    """Webhooks stored for the refund and waiting for it (parked), with their raw bodies."""
    events = EventStore.of(ledger)
    found = []
    for nid in events.parked(ref):
        stored = events.get(nid)
        if not stored:
            continue
        found.append(
            StoredWebhook(
                nid,
                stored.get("status", ""),
                float(stored["received_at"]) if stored.get("received_at") else None,
                _pretty(stored.get("body", "")),
            )
        )
    return found


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, sort_keys=True)
    except ValueError:
        return body


@dataclass(frozen=True)
class SideBySide:
    """One row of the refund page's comparison: the merchant's intent beside the provider's view
    (``differs``: both are known and they disagree)."""

    label: str
    ours: Any
    theirs: Any
    #: The two say the same thing in the same words (a status is ours vs MCE's number: not).
    comparable: bool = True

    @property
    def differs(self) -> bool:
        if not self.comparable or self.ours is None or self.theirs is None:
            return False
        if self.label == "refundAddress":  # an EVM address in any case is the same address
            return addresses.comparable(self.ours) != addresses.comparable(self.theirs)
        return bool(self.ours != self.theirs)


def side_by_side(record: RefundRecord) -> list[SideBySide]:
    return [
        SideBySide(
            "clientReference",
            record.client_reference,
            record.client_reference if record.crypto_refund_id else None,
        ),
        SideBySide(
            "originalTransactionId",
            record.original_transaction_id,
            record.provider_transaction_id,
        ),
        SideBySide("refundAddress", record.refund_address, record.provider_refund_address),
        SideBySide("cryptoRefundId", None, record.crypto_refund_id),
        SideBySide("status", str(record.state), _status_text(record), comparable=False),
        SideBySide("amount", None, _money(record.amount, record.currency)),
        SideBySide("fee", None, _money(record.fee_amount, record.fee_currency)),
        SideBySide("blockchain", None, record.blockchain),
        SideBySide("txnHash", None, record.txn_hash),
    ]


def _status_text(record: RefundRecord) -> str | None:
    if record.provider_status is None:
        return None
    label = f" ({record.status_info})" if record.status_info else ""
    return f"{record.provider_status}{label}"


def _money(amount: Any, currency: str | None) -> str | None:
    text = format_money(amount)
    return None if text is None else f"{text} {currency or ''}".strip()


@dataclass
class RefundPage:
    record: RefundRecord
    compare: list[SideBySide]
    webhook_history: list[Any]
    parked: list[StoredWebhook]
    notifications: list[Notification]
    #: Reconciliation findings (refunds/archive, later): empty until that check exists.
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.record.state in FINAL_STATES


def refund_page(ledger: Ledger, ref: str) -> RefundPage:
    """Raises RefundNotFoundError for an unknown reference (the app answers 404)."""
    record = ledger.get(ref)
    return RefundPage(
        record=record,
        compare=side_by_side(record),
        webhook_history=[h for h in record.history if h.actor == WEBHOOK_ACTOR],
        parked=parked_webhooks(ledger, ref),
        notifications=notifications_of(ledger, ref),
    )


def search(ledger: Ledger, query: str) -> list[RefundRecord]:
    """Refunds whose clientReference, cryptoRefundId or txnHash is ``query`` (exact).

    A reference or refund id is one lookup; a txnHash is looked for among the newest
    ``SEARCH_SCAN_LIMIT`` records (no index of hashes exists).
    """
    q = query.strip()
    if not q:
        return []
    found: dict[str, RefundRecord] = {}
    direct = ledger.find(q)
    if direct is not None:
        found[direct.client_reference] = direct
    by_id = ledger.reference_of_refund_id(q)
    if by_id and by_id not in found and (record := ledger.find(by_id)) is not None:
        found[by_id] = record
    if not found:
        refs = ledger.references(None)[-SEARCH_SCAN_LIMIT:]
        for record in ledger.get_many(refs):
            if record.txn_hash and record.txn_hash.lower() == q.lower():
                found[record.client_reference] = record
    return list(found.values())
