"""Hot retention: a final refund leaves Redis ``REFUNDS_HOT_RETENTION`` after it turned final.

Candidates come from the archive (final, ``final_at`` older than the retention, still in Redis),
so only archived refunds are ever considered; the eviction script then removes a record only if
Redis holds exactly the archived version (``refunds.store.archive_queue``). A record written
after it was archived (a conflict mark, an operator note) waits for the archiver to catch up and
goes on a later round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from refunds.archive.archiver import utc
from refunds.archive.models import ArchivedRefund
from refunds.store.archive_queue import ArchiveQueue

__all__ = ["Evicted", "evict_expired"]

_EVICTED, _GONE = 1, 0


@dataclass(frozen=True)
class Evicted:
    """One round: records removed from Redis, and those kept (not yet archived at their current
    version, leased, conflicted, or a notification pending)."""

    evicted: int
    kept: int


def evict_expired(
    queue: ArchiveQueue, engine: Engine, retention: float, limit: int = 500
) -> Evicted:
    """Remove from Redis up to ``limit`` final refunds past ``retention`` seconds since final."""
    cutoff = utc(time.time() - retention)
    with engine.connect() as conn:
        rows = conn.execute(
            select(ArchivedRefund.reference, ArchivedRefund.version)
            .where(ArchivedRefund.final_at <= cutoff, ArchivedRefund.evicted_at.is_(None))
            .order_by(ArchivedRefund.final_at)
            .limit(limit)
        ).all()
    done: list[str] = []
    kept = 0
    for ref, version in rows:
        outcome = queue.evict(ref, version)
        if outcome in (_EVICTED, _GONE):
            done.append(ref)
        else:
            kept += 1
    if done:
        with engine.begin() as conn:
            conn.execute(
                update(ArchivedRefund)
                .where(ArchivedRefund.reference.in_(done))
                .values(evicted_at=utc(time.time()))
            )
    return Evicted(len(done), kept)
