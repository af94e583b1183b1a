"""Reads that answer from Redis or the archive, without the caller knowing which.

A record lives in Redis while it is hot; once it turned final, was archived and its hot retention
passed, its keys leave Redis and its reference joins the tombstones (``rp:gone``). ``Refunds``
looks in Redis first, and in the archive only for a tombstoned reference, so an unknown reference
costs no SQL. Listings merge the two, oldest first: the hot references (Redis' creation index)
and the evicted ones (``refunds.evicted_at`` set), each already filtered and ordered.

The archived record is rebuilt from the snapshot's hash fields with the same codec as Redis', and
its history from ``refund_events``: the same ``RefundRecord`` a caller gets from the ledger.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice

from sqlalchemy import Engine, Select, func, select

from config.settings import Settings
from refunds.archive.archiver import utc
from refunds.archive.db import engine_for
from refunds.archive.models import ArchivedRefund, RefundEvent
from refunds.errors import RefundNotFoundError
from refunds.models import HistoryEntry, RefundRecord, State
from refunds.store.archive_queue import ArchiveQueue
from refunds.store.codec import decode
from refunds.store.ledger import Ledger

__all__ = [
    "ArchiveReader",
    "RefundFilter",
    "RefundPageResult",
    "Refunds",
    "archived_lookup",
    "refunds_of",
    "window_edge",
]


_LAST_SECOND = 253_402_300_799.0  # 9999-12-31T23:59:59Z


def window_edge(value: datetime | None) -> float | None:
    """A caller's window edge as epoch seconds (UTC when it has no offset), clamped to
    [1970, 9999]: no refund lies outside, and a datetime of year 1 or 9999 with an offset does
    not overflow the conversions behind it."""
    if value is None:
        return None
    try:
        ts = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, ValueError):
        ts = 0.0 if value.year < 1970 else _LAST_SECOND
    return min(max(ts, 0.0), _LAST_SECOND)


def _epoch(value: datetime) -> float:
    # SQLite hands back naive datetimes: they were written in UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class RefundFilter:
    """What a listing keeps: a state, a creation window [from, to) in epoch seconds, a currency,
    an amount range (inclusive). None: no condition."""

    state: State | None = None
    created_from: float | None = None
    created_to: float | None = None
    currency: str | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None

    @property
    def needs_record(self) -> bool:
        """Whether a hot reference must be read to be judged (currency or amount)."""
        return any(v is not None for v in (self.currency, self.amount_min, self.amount_max))

    def keeps_time(self, created: float) -> bool:
        return (self.created_from is None or created >= self.created_from) and (
            self.created_to is None or created < self.created_to
        )

    def keeps(self, record: RefundRecord) -> bool:
        if self.currency is not None and record.currency != self.currency:
            return False
        if self.amount_min is not None and (
            record.amount is None or record.amount < self.amount_min
        ):
            return False
        return not (
            self.amount_max is not None
            and (record.amount is None or record.amount > self.amount_max)
        )

    def where(self, query: Select[str, datetime]) -> Select[str, datetime]:
        t = ArchivedRefund
        if self.state is not None:
            query = query.where(t.state == str(self.state))
        if self.created_from is not None:
            query = query.where(t.created_at >= utc(self.created_from))
        if self.created_to is not None:
            query = query.where(t.created_at < utc(self.created_to))
        if self.currency is not None:
            query = query.where(t.currency == self.currency)
        if self.amount_min is not None:
            query = query.where(t.amount >= self.amount_min)
        if self.amount_max is not None:
            query = query.where(t.amount <= self.amount_max)
        return query


class ArchiveReader:
    """Records as the archive holds them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find(self, ref: str) -> RefundRecord | None:
        found = self.find_many([ref])
        return found[0] if found else None

    def find_many(self, refs: list[str]) -> list[RefundRecord]:
        """Records in the order of ``refs`` (missing ones skipped), each with its history."""
        if not refs:
            return []
        with self.engine.connect() as conn:
            snaps = dict(
                conn.execute(
                    select(ArchivedRefund.reference, ArchivedRefund.record).where(
                        ArchivedRefund.reference.in_(refs)
                    )
                ).all()
            )
            history: dict[str, list[HistoryEntry]] = {r: [] for r in snaps}
            e = RefundEvent
            rows = conn.execute(
                select(e.reference, e.at, e.from_state, e.to_state, e.reason, e.actor)
                .where(e.reference.in_(list(snaps)))
                .order_by(e.reference, e.version)
            )
            for ref, at, from_state, to_state, reason, actor in rows:
                history[ref].append(
                    HistoryEntry(round(_epoch(at), 3), from_state, to_state, reason, actor)
                )
        return [
            dataclasses.replace(
                decode(ref, json.loads(snaps[ref]), None), history=tuple(history[ref])
            )
            for ref in refs
            if ref in snaps
        ]

    def evicted(self, wanted: RefundFilter, first: int) -> tuple[list[tuple[float, str]], int]:
        """The first ``first`` evicted references that ``wanted`` keeps, oldest first, as
        ``(created, ref)``, and how many it keeps in all."""
        base = select(ArchivedRefund.reference, ArchivedRefund.created_at).where(
            ArchivedRefund.evicted_at.is_not(None)
        )
        query = wanted.where(base)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            rows = conn.execute(
                query.order_by(ArchivedRefund.created_at, ArchivedRefund.reference).limit(first)
            ).all()
        return [(_epoch(created), ref) for ref, created in rows], int(total)

    def evicted_counts(self) -> dict[str, int]:
        """Evicted refunds by state."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ArchivedRefund.state, func.count())
                .where(ArchivedRefund.evicted_at.is_not(None))
                .group_by(ArchivedRefund.state)
            ).all()
        return {str(state): int(n) for state, n in rows}


@dataclass(frozen=True)
class RefundPageResult:
    items: list[RefundRecord]
    next: int | None
    total: int


class Refunds:
    """Refund records from Redis or the archive (see the module doc)."""

    def __init__(self, ledger: Ledger, archive: ArchiveReader) -> None:
        self.ledger = ledger
        self.archive = archive
        self.queue = ArchiveQueue(ledger.redis)

    def find(self, ref: str) -> RefundRecord | None:
        record = self.ledger.find(ref)
        if record is None and self.queue.is_archived_reference(ref):
            return self.archive.find(ref)
        return record

    def get(self, ref: str) -> RefundRecord:
        record = self.find(ref)
        if record is None:
            raise RefundNotFoundError(ref)
        return record

    def _hot(self, wanted: RefundFilter) -> list[tuple[float, str]]:
        """The hot references ``wanted`` keeps, oldest first, as ``(created, ref)``."""
        refs = self.ledger.references(wanted.state)
        created = self.queue.created_times(refs)
        hot = [(c, r) for c, r in zip(created, refs, strict=True) if c is not None]
        hot = [(c, r) for c, r in hot if wanted.keeps_time(c)]
        if not wanted.needs_record:
            return hot
        kept: set[str] = set()
        for start in range(0, len(hot), 500):
            part = [r for _, r in hot[start : start + 500]]
            kept.update(
                rec.client_reference for rec in self.ledger.get_many(part) if wanted.keeps(rec)
            )
        return [(c, r) for c, r in hot if r in kept]

    def page(self, wanted: RefundFilter, limit: int, cursor: int = 0) -> RefundPageResult:
        """Records ``cursor`` to ``cursor + limit`` of those ``wanted`` keeps, oldest first."""
        hot = self._hot(wanted)
        cold, cold_total = self.archive.evicted(wanted, cursor + limit)
        total = len(hot) + cold_total
        merged = list(islice(heapq.merge(hot, cold), cursor, cursor + limit))
        records = self.get_many([ref for _, ref in merged])
        nxt = cursor + limit if cursor + limit < total else None
        return RefundPageResult(records, nxt, total)

    def get_many(self, refs: list[str]) -> list[RefundRecord]:
        """Records in the order of ``refs``: Redis first, the archive for the rest."""
        found = {r.client_reference: r for r in self.ledger.get_many(refs)}
        missing = [r for r in refs if r not in found]
        found.update({r.client_reference: r for r in self.archive.find_many(missing)})
        return [found[r] for r in refs if r in found]

    def counts(self) -> dict[str, int]:
        """Refunds by state, hot and archived together."""
        counts = self.ledger.counts()
        for state, n in self.archive.evicted_counts().items():
            counts[state] = counts.get(state, 0) + n
        return counts


def archived_lookup(settings: Settings) -> Callable[[str], RefundRecord | None]:
    """Intake's look-up of a tombstoned reference (``Ledger(archived=...)``); the engine connects
    on first use, so a process that never meets an archived reference never opens the database."""
    return ArchiveReader(engine_for(settings.database_url)).find


def refunds_of(ledger: Ledger, settings: Settings) -> Refunds:
    """The reads of one process: its ledger and the configured archive."""
    return Refunds(ledger, ArchiveReader(engine_for(settings.database_url)))
