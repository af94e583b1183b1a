"""Operational counters in Redis: the writes, and the raw reads ``refunds.ops.counters`` shapes.

Workers run on many machines, so per-process Prometheus registries would each see a slice; every
process adds to one set of counters here (keys in ``refunds.store.keys``: ``rp:stats:*``). Each
provider call costs one pipelined round trip (a few HINCRBYs).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
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

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ERROR_TTL = 2 * 3600  # seconds a per-minute error hash is kept


def bucket(seconds: float) -> str:
    """The latency bucket (upper bound, as stored) for a call of ``seconds``."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


@dataclass
class Counters:
    """Adds to the shared counters; ``*_raw`` reads answer the hashes as stored."""

    redis: redis.Redis

    @classmethod
    def of(cls, ledger: Ledger) -> Self:
        """The counters in the ledger's database."""
        return cls(ledger.redis)

    def record_call(self, operation: str, outcome: str, seconds: float | None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(CALLS, f"{operation}|{outcome}", 1)
        if seconds is not None:
            pipe.hincrby(LATENCY, f"{operation}|{bucket(seconds)}", 1)
            pipe.hincrbyfloat(LATENCY, f"{operation}|sum", seconds)
        pipe.execute()

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
