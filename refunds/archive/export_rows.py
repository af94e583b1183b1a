"""The rows of a finance export: fixed columns, read from the archive a page at a time.

Schema version ``EXPORT_SCHEMA`` names the column set below; a change of columns is a new
version. A row is one refund of the period: created in ``[start, end)`` (UTC, half-open, as
Stripe's reports), optionally in some states. Amounts stay ``Decimal`` all the way; times are
UTC ISO 8601. Rows stream in pages of ``PAGE`` (keyset on creation time and reference), so an
export of millions of refunds holds one page in memory.

The period summary (per currency: counts and sums by final state, fees) and the totals of the
manifest are accumulated while the rows stream (``Totals``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from refunds.archive.archiver import utc
from refunds.archive.models import ArchivedRefund, RefundEvent
from refunds.models import FINAL_STATES, iso
from refunds.money import format_money

__all__ = ["AMOUNT_COLUMNS", "COLUMNS", "EXPORT_SCHEMA", "Period", "Totals", "rows"]

EXPORT_SCHEMA = "refunds-export/1"
PAGE = 1000

#: The columns, in order (schema ``EXPORT_SCHEMA``).
COLUMNS: tuple[str, ...] = (
    "client_reference",
    "crypto_refund_id",
    "original_transaction_type",
    "original_transaction_id",
    "state",
    "provider_status",
    "blockchain",
    "currency",
    "amount",
    "fee_currency",
    "fee_amount",
    "refund_address",
    "txn_hash",
    "created_at",
    "confirmed_at",
    "final_at",
    "approved_by",
    "open_finding",
)
AMOUNT_COLUMNS = frozenset({"amount", "fee_amount"})
INT_COLUMNS = frozenset({"original_transaction_type", "provider_status"})
TEXT_COLUMNS = frozenset(COLUMNS) - AMOUNT_COLUMNS - INT_COLUMNS

Row = dict[str, Any]


@dataclass(frozen=True)
class Period:
    """Refunds created in ``[start, end)`` (epoch seconds, UTC), in ``states`` (empty: all)."""

    start: float
    end: float
    states: tuple[str, ...] = ()

    def to_public(self) -> dict[str, Any]:
        return {"from": iso(self.start), "to": iso(self.end), "states": list(self.states)}


def _dec(value: str | None) -> Decimal | None:
    return Decimal(value) if value not in (None, "") else None


def _epoch(value: datetime | None) -> float | None:
    # SQLite hands back naive datetimes: they were written in UTC.
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _row(
    raw: dict[str, str], state: str, final_at: datetime | None, confirmed: float | None
) -> Row:
    pstatus = raw.get("pstatus")
    return {
        "client_reference": raw["_ref"],
        "crypto_refund_id": raw.get("rid") or None,
        "original_transaction_type": int(raw["type"]),
        "original_transaction_id": raw["txn"],
        "state": state,
        "provider_status": int(pstatus) if pstatus not in (None, "") else None,
        "blockchain": raw.get("chain") or None,
        "currency": raw.get("cur") or None,
        "amount": _dec(raw.get("amount")),
        "fee_currency": raw.get("feecur") or None,
        "fee_amount": _dec(raw.get("fee")),
        "refund_address": raw.get("addr") or None,
        "txn_hash": raw.get("hash") or None,
        "created_at": iso(float(raw["created"])),
        "confirmed_at": iso(confirmed) if confirmed is not None else None,
        "final_at": iso(_epoch(final_at)) if final_at is not None else None,
        "approved_by": raw.get("apby") or None,
        "open_finding": None,  # reconciliation findings: not built yet
    }


def _confirmed_times(conn: Any, refs: Sequence[str]) -> dict[str, float]:
    """When each refund was confirmed: its first move into ``processing``."""
    found: dict[str, float] = {}
    query = (
        select(RefundEvent.reference, RefundEvent.at)
        .where(RefundEvent.reference.in_(list(refs)), RefundEvent.to_state == "processing")
        .order_by(RefundEvent.reference, RefundEvent.version)
    )
    for ref, at in conn.execute(query):
        if ref not in found:
            epoch = _epoch(at)
            if epoch is not None:
                found[ref] = epoch
    return found


def rows(engine: Engine, period: Period) -> Iterator[Row]:
    """The period's refunds, oldest first, a page at a time."""
    t = ArchivedRefund
    after: tuple[datetime, str] | None = None
    while True:
        query = select(t.reference, t.state, t.final_at, t.created_at, t.record).where(
            t.created_at >= utc(period.start), t.created_at < utc(period.end)
        )
        if period.states:
            query = query.where(t.state.in_(period.states))
        if after is not None:
            query = query.where(
                or_(t.created_at > after[0], and_(t.created_at == after[0], t.reference > after[1]))
            )
        with engine.connect() as conn:
            page = conn.execute(query.order_by(t.created_at, t.reference).limit(PAGE)).all()
            confirmed = _confirmed_times(conn, [r[0] for r in page]) if page else {}
        for ref, state, final_at, _created, record in page:
            raw = json.loads(record)
            raw["_ref"] = ref
            yield _row(raw, state, final_at, confirmed.get(ref))
        if len(page) < PAGE:
            return
        after = (page[-1][3], page[-1][0])


@dataclass
class Totals:
    """Counts and exact sums while the rows stream: per (currency, state), and fees."""

    rows: int = 0
    count: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    amount: dict[tuple[str, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    fees: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def add(self, row: Row) -> None:
        self.rows += 1
        key = (row["currency"] or "", row["state"])
        self.count[key] += 1
        if row["amount"] is not None:
            self.amount[key] += row["amount"]
        if row["fee_amount"] is not None:
            self.fees[row["fee_currency"] or ""] += row["fee_amount"]

    def sums(self) -> list[dict[str, Any]]:
        """Rows and the sum of amounts per currency and state (exact decimal strings)."""
        return [
            {"currency": c, "state": s, "rows": n, "amount": _plain(self.amount[(c, s)])}
            for (c, s), n in sorted(self.count.items())
        ]

    def summary(self) -> list[dict[str, Any]]:
        """Per currency: counts and sums by final state, fees, open findings."""
        out = []
        for cur in sorted({c for c, _ in self.count}):
            finals = {
                s: {"count": self.count[(cur, s)], "amount": _plain(self.amount[(cur, s)])}
                for c, s in sorted(self.count)
                if c == cur and s in FINAL_STATES
            }
            out.append(
                {
                    "currency": cur,
                    "byFinalState": finals,
                    "fees": _plain(self.fees.get(cur, Decimal(0))),
                    "openFindings": 0,
                }
            )
        return out


def _plain(value: Decimal) -> str:
    """A sum in plain notation (``refunds.money``: never ``1E-18``)."""
    return format_money(value) or "0"
