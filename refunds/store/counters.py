"""Operational counters in Redis: the writes, and the raw reads ``refunds.ops.counters`` shapes.

Workers run on many machines, so per-process Prometheus registries would each see a slice; every
process adds to one set of counters here (keys in ``refunds.store.keys``: ``rp:stats:*``).

Provider calls are counted in process memory and written at most once a second
(``FLUSH_SECONDS``) by a daemon thread, in one pipelined round trip for everything counted
meanwhile: a provider call costs no Redis command of its own (it cost three before, about nine per
refund). So the call and latency counters lag the calls by up to a second, and a process that is
killed without a clean exit (SIGKILL, a lost machine) loses at most its last second of counts; a
normal exit (``atexit``, Celery's ``worker_process_shutdown``) writes them. A write that fails
(Redis down) keeps the counts for the next second. The rarer counters (errors, webhooks,
conflicts) are written at once.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self, cast

import redis

from refunds.store.keys import (
    CALLS,
    CONFLICT_KINDS,
    LATENCY,
    TOKEN_FETCHES,
    WEBHOOKS,
    errors_key,
)

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

log = logging.getLogger("refunds.counters")

FLUSH_SECONDS = 1.0  # provider-call counts are written at most this often (seconds)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ERROR_TTL = 2 * 3600  # seconds a per-minute error hash is kept


def bucket(seconds: float) -> str:
    """The latency bucket (upper bound, as stored) for a call of ``seconds``."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


_live: weakref.WeakSet[Counters] = weakref.WeakSet()  # flushed at interpreter exit


def flush_all() -> None:
    """Write every live ``Counters``' pending counts (at exit; Celery's process shutdown).
    Best effort: a Redis that is gone loses those counts (at most a second's), raising nothing."""
    for counters in list(_live):
        try:
            counters.flush()
        except Exception:  # noqa: BLE001 - at exit, nothing is left to retry
            log.warning("the last provider-call counters could not be written")


atexit.register(flush_all)


@dataclass(eq=False)
class Counters:
    """Adds to the shared counters; ``*_raw`` reads answer the hashes as stored.

    ``flush_seconds``: how often buffered provider-call counts are written (0: at once, in the
    caller's thread)."""

    redis: redis.Redis
    flush_seconds: float = FLUSH_SECONDS
    _ints: Counter[tuple[str, str]] = field(default_factory=Counter, init=False, repr=False)
    _floats: dict[tuple[str, str], float] = field(default_factory=dict, init=False, repr=False)
    _mutex: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _flusher: threading.Thread | None = field(default=None, init=False, repr=False)
    _pid: int = field(default_factory=os.getpid, init=False, repr=False)

    def __post_init__(self) -> None:
        _live.add(self)

    @classmethod
    def of(cls, ledger: Ledger) -> Self:
        """The counters in the ledger's database."""
        return cls(ledger.redis)

    def record_call(self, operation: str, outcome: str, seconds: float | None) -> None:
        """Count one provider call (``outcome``: HTTP status, ``timeout``, ``connection``,
        ``throttled``) and its latency in ``seconds``; written within ``flush_seconds``."""
        if self._pid != os.getpid():
            # A forked child: the parent's pending counts and flusher thread are the parent's.
            self._ints, self._floats = Counter(), {}
            self._mutex, self._flusher, self._pid = threading.Lock(), None, os.getpid()
        with self._mutex:
            self._ints[(CALLS, f"{operation}|{outcome}")] += 1
            if seconds is not None:
                self._ints[(LATENCY, f"{operation}|{bucket(seconds)}")] += 1
                name = (LATENCY, f"{operation}|sum")
                self._floats[name] = self._floats.get(name, 0.0) + seconds
            start = self._flusher is None and self.flush_seconds > 0
            if start:
                self._flusher = threading.Thread(
                    target=self._flush_every, name="counters-flush", daemon=True
                )
        if self.flush_seconds <= 0:
            self.flush()
        elif start and self._flusher is not None:
            self._flusher.start()

    def _flush_every(self) -> None:
        failing = False
        while True:
            time.sleep(self.flush_seconds)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a Redis blip: the counts wait for the next second
                if not failing:  # one line per outage, not one a second
                    log.warning("writing the provider-call counters failed; retrying each second")
                failing = True
            else:
                failing = False

    def flush(self) -> None:
        """Write the buffered provider-call counts in one pipelined round trip. On a Redis error
        they are kept for the next flush and the error is raised."""
        with self._mutex:
            ints, floats = self._ints, self._floats
            self._ints, self._floats = Counter(), {}
        if not ints and not floats:
            return
        pipe = self.redis.pipeline(transaction=False)
        for (key, name), n in ints.items():
            pipe.hincrby(key, name, n)
        for (key, name), x in floats.items():
            pipe.hincrbyfloat(key, name, x)
        try:
            pipe.execute()
        except BaseException:
            with self._mutex:
                self._ints.update(ints)
                for pair, x in floats.items():
                    self._floats[pair] = self._floats.get(pair, 0.0) + x
            raise

    def record_error(self, code: str) -> None:
        key = errors_key(int(time.time() // 60))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, code, 1)
        pipe.expire(key, ERROR_TTL)
        pipe.execute()

    def record_webhook(self, outcome: str) -> None:
        self.redis.hincrby(WEBHOOKS, outcome, 1)

    def record_conflict(self, kind: str) -> None:
        """One more provider conflict of ``kind`` (e.g. ``completed_after_cancelled``)."""
        self.redis.hincrby(CONFLICT_KINDS, kind, 1)

    # --- raw reads ---

    def calls_raw(self) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(CALLS))

    def latency_raw(self) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(LATENCY))

    def webhooks_raw(self) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(WEBHOOKS))

    def conflicts_raw(self) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(CONFLICT_KINDS))

    def errors_raw(self, minutes: Iterable[int]) -> list[dict[str, str]]:
        """The per-minute error hashes of ``minutes`` (epoch minutes), pipelined."""
        pipe = self.redis.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(errors_key(minute))
        return cast(list[dict[str, str]], pipe.execute())

    def token_fetches(self) -> int:
        return int(cast(str | None, self.redis.get(TOKEN_FETCHES)) or 0)
