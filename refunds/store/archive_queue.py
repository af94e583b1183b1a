"""The Redis side of the SQL archive: the queue the writing scripts fill, its lock, and eviction.

Every record write, stored webhook, webhook outcome and notification outcome is XADDed to
``rp:arch`` by the script (or MULTI) that makes it, so the queue has an entry for every write
Redis kept, AOF restarts included. ``refunds.archive.archiver`` reads the oldest entries, commits
them to SQL idempotently and only then deletes them (``XDEL``): a crash in between re-reads them,
and the unique keys in SQL make the second insert a no-op. One archiver drains at a time
(``rp:arch:lock``, SET NX PX with a token), so entries are applied in order.

Eviction (hot retention) is one script: a final record leaves Redis only if its version is the
archived one, it holds no step lease, is not marked as a provider conflict and has no outcome
notification pending; its reference joins ``rp:gone`` (the intake tombstone, see
``Ledger.submit``). The keys are listed in ``refunds.store.keys``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis

from refunds.models import FINAL_STATES
from refunds.store.keys import (
    ALL,
    ARCHIVE_LOCK,
    ARCHIVE_QUEUE,
    ARCHIVED_REFS,
    CONFLICTS,
    OUTBOX,
    STATE_PREFIX,
    TIMERS,
    history_key,
    legacy_history_key,
    parked_key,
    record_key,
    refund_id_key,
)
from refunds.store.scripts import Script

__all__ = ["ArchiveQueue", "Entry", "Lag"]



_FINALS = "," + ",".join(sorted(FINAL_STATES)) + ","


@dataclass(frozen=True)
class Entry:
    """One queued change: its stream id (``{ms}-{seq}``, Redis time) and its fields."""

    id: str
    fields: dict[str, str]


@dataclass(frozen=True)
class Lag:
    """How far the archive is behind Redis: queued entries and the oldest one's age (s)."""

    length: int
    oldest_age: float

    def to_public(self) -> dict[str, Any]:
        return {"queued": self.length, "oldestAgeSeconds": round(self.oldest_age, 3)}


class ArchiveQueue:
    """The archive queue, the archiver's lock and the eviction of archived final records."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._unlock = Script(client, "archive_unlock")  # lua/archive_unlock.lua
        self._evict = Script(client, "archive_evict")  # lua/archive_evict.lua

    def read(self, count: int) -> list[Entry]:
        """The ``count`` oldest entries, oldest first."""
        raw = cast(list[Any], self.redis.xrange(ARCHIVE_QUEUE, "-", "+", count=count))
        return [Entry(str(i), dict(f)) for i, f in raw]

    def delete(self, ids: list[str]) -> None:
        """Forget entries committed to SQL."""
        if ids:
            self.redis.xdel(ARCHIVE_QUEUE, *ids)

    def lag(self) -> Lag:
        """Queue length and the age of its oldest entry (Redis time; 0 when empty)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(ARCHIVE_QUEUE)
        pipe.xrange(ARCHIVE_QUEUE, "-", "+", count=1)
        pipe.time()
        length, first, (sec, usec) = pipe.execute()
        if not first:
            return Lag(int(length), 0.0)
        oldest_ms = int(str(first[0][0]).split("-")[0])
        return Lag(int(length), max(0.0, sec + usec / 1e6 - oldest_ms / 1000))

    def lock(self, token: str, seconds: float) -> bool:
        """Take the archiver lock for ``seconds`` (True: ours)."""
        return bool(self.redis.set(ARCHIVE_LOCK, token, nx=True, px=int(seconds * 1000)))

    def unlock(self, token: str) -> None:
        self._unlock(keys=[ARCHIVE_LOCK], args=[token])

    def evict(self, ref: str, version: int) -> int:
        """Remove the final record ``ref`` if Redis holds exactly the archived ``version`` (see
        ``lua/archive_evict.lua`` for the answers); its reference joins the tombstones."""
        keys = [
            record_key(ref),
            history_key(ref),
            legacy_history_key(ref),
            ALL,
            ARCHIVED_REFS,
            OUTBOX,
            CONFLICTS,
            TIMERS,
            parked_key(ref),
        ]
        args = [ref, str(version), _FINALS, STATE_PREFIX, refund_id_key(""), f"task:{ref}"]
        return int(cast(int, self._evict(keys=keys, args=[*args, f"http:{ref}"])))

    def created_times(self, refs: list[str]) -> list[float | None]:
        """Creation times of hot references (the ledger's creation index; None: not there)."""
        if not refs:
            return []
        out: list[float | None] = []
        for start in range(0, len(refs), 1000):
            part = refs[start : start + 1000]
            scores = cast(list[Any], self.redis.zmscore(ALL, part))
            out += [None if s is None else float(s) for s in scores]
        return out

    def is_archived_reference(self, ref: str) -> bool:
        """Whether ``ref`` left Redis for the archive (its tombstone)."""
        return bool(self.redis.sismember(ARCHIVED_REFS, ref))

    def archived_references(self) -> int:
        return int(self.redis.scard(ARCHIVED_REFS))
