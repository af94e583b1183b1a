"""One archive round as the ``archive.drain`` task runs it: drain the queue, then evict what is
past hot retention. A database that is down ends the round with a warning: the entries stay
queued in Redis and the next round (beat, every ``REFUNDS_ARCHIVE_INTERVAL``) tries again."""

from __future__ import annotations

import logging
import time
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

_WARN_EVERY = 60.0  # seconds between warnings while the database stays down (beat runs each second)


@dataclass
class _Outage:
    """This process's view of a database outage: when it began and when it was last logged."""

    since: float | None = None
    logged: float = 0.0


_outage = _Outage()


@dataclass(frozen=True)
class RoundResult:
    archived: int
    evicted: int
    error: str | None = None


def archive_round(client: redis.Redis, settings: Settings) -> RoundResult:
    queue = ArchiveQueue(client)
    engine = engine_for(settings.database_url)
    try:
        # A round stops well within the task's soft limit; the lock outlives the hard one, so a
        # round killed there (or a SIGKILLed worker) holds it back no longer than that.
        drained = drain(
            queue,
            engine,
            batch_size=settings.archive_batch,
            budget_seconds=settings.task_soft_time_limit / 2,
            lock_seconds=settings.task_time_limit + 5,
        )
        evicted = 0
        # Evict only when the queue is drained: a record's newest write may still be queued.
        if not drained.locked_out and queue.lag().length == 0:
            evicted = evict_expired(queue, engine, settings.hot_retention).evicted
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        at = time.monotonic()
        if _outage.since is None:
            _outage.since = at
        if at - _outage.logged >= _WARN_EVERY:
            _outage.logged = at
            lag = queue.lag()
            log.warning(
                "archive: database unavailable for %.0f s, %d changes stay queued in Redis: %s",
                at - _outage.since,
                lag.length,
                first,
            )
        return RoundResult(0, 0, first)
    if _outage.since is not None:
        log.warning(
            "archive: database back after %.0f s", time.monotonic() - _outage.since
        )
        _outage.since, _outage.logged = None, 0.0
    return RoundResult(drained.entries, evicted)
