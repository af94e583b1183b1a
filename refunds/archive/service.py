"""One archive round as the ``archive.drain`` task runs it: drain the queue, then evict what is
past hot retention. A database that is down ends the round with a warning: the entries stay
queued in Redis and the next round (beat, every ``REFUNDS_ARCHIVE_INTERVAL``) tries again."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from refunds.archive.archiver import drain
from refunds.archive.db import engine_for
from refunds.archive.retention import evict_expired
from refunds.store.archive_queue import ArchiveQueue

__all__ = ["RoundResult", "archive_round"]

log = logging.getLogger("refunds.archive")


@dataclass(frozen=True)
class RoundResult:
    archived: int
    evicted: int
    error: str | None = None


def archive_round(client: redis.Redis, settings: Settings) -> RoundResult:
    queue = ArchiveQueue(client)
    engine = engine_for(settings.database_url)
    try:
        drained = drain(queue, engine, batch_size=settings.archive_batch)
        evicted = 0
        # Evict only when the queue is drained: a record's newest write may still be queued.
        if not drained.locked_out and queue.lag().length == 0:
            evicted = evict_expired(queue, engine, settings.hot_retention).evicted
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("archive: database unavailable, entries stay queued in Redis: %s", first)
        return RoundResult(0, 0, first)
    return RoundResult(drained.entries, evicted)
