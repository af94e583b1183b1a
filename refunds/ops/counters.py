"""Operational counters kept in Redis, so every process adds to one set of numbers.

Workers run on many machines, so per-process Prometheus registries would each see a slice; the
web app's ``/metrics`` and ``refunds stats`` read these shared counters instead. Each provider
call costs one pipelined round trip (a few HINCRBYs).

Keys:
- ``rp:stats:calls``       hash ``{operation}|{outcome}`` -> count (outcome: HTTP status,
                           ``timeout``, ``connection`` or ``throttled``)
- ``rp:stats:latency``     hash ``{operation}|{bucket}`` -> count, ``{operation}|sum`` -> seconds
- ``rp:stats:errors:{m}``  hash error code -> count, per minute ``m`` (epoch minutes), kept 2 hours
- ``rp:stats:webhooks``    hash outcome -> count
- ``rp:stats:conflicts``   hash conflict kind (e.g. ``completed_after_cancelled``) -> count
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import redis

CALLS = "rp:stats:calls"
LATENCY = "rp:stats:latency"
WEBHOOKS = "rp:stats:webhooks"
CONFLICTS = "rp:stats:conflicts"
ERRORS_PREFIX = "rp:stats:errors:"
TOKEN_FETCHES = "rp:stats:token_fetches"  # noqa: S105 - a key name
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ERROR_TTL = 2 * 3600


def _bucket(seconds: float) -> str:
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


@dataclass
class Stats:
    """Writes and reads the shared counters."""

    redis: redis.Redis

    def record_call(self, operation: str, outcome: str, seconds: float | None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(CALLS, f"{operation}|{outcome}", 1)
        if seconds is not None:
            pipe.hincrby(LATENCY, f"{operation}|{_bucket(seconds)}", 1)
            pipe.hincrbyfloat(LATENCY, f"{operation}|sum", seconds)
        pipe.execute()

    def record_error(self, code: str) -> None:
        key = f"{ERRORS_PREFIX}{int(time.time() // 60)}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, code, 1)
        pipe.expire(key, _ERROR_TTL)
        pipe.execute()

    def record_webhook(self, outcome: str) -> None:
        self.redis.hincrby(WEBHOOKS, outcome, 1)

    def record_conflict(self, kind: str) -> None:
        self.redis.hincrby(CONFLICTS, kind, 1)

    def conflicts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.redis.hgetall(CONFLICTS).items()}

    # --- reading ---

    def calls(self) -> dict[tuple[str, str], int]:
        raw = self.redis.hgetall(CALLS)
        out: dict[tuple[str, str], int] = {}
        for field, value in raw.items():
            operation, _, outcome = str(field).partition("|")
            out[(operation, outcome)] = int(value)
        return out

    def latency(self) -> dict[str, dict[str, float]]:
        """Per operation: bucket upper bound (or "sum") -> value, as stored (not cumulative)."""
        out: dict[str, dict[str, float]] = {}
        for field, value in self.redis.hgetall(LATENCY).items():
            operation, _, bucket = str(field).partition("|")
            out.setdefault(operation, {})[bucket] = float(value)
        return out

    def errors_since(self, seconds: float = 3600) -> Counter[str]:
        """Error codes recorded in the last ``seconds`` (minute resolution)."""
        now_minute = int(time.time() // 60)
        minutes = range(now_minute - int(seconds // 60), now_minute + 1)
        pipe = self.redis.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(f"{ERRORS_PREFIX}{minute}")
        total: Counter[str] = Counter()
        for counts in pipe.execute():
            for code, n in counts.items():
                total[str(code)] += int(n)
        return total

    def webhooks(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.redis.hgetall(WEBHOOKS).items()}

    def token_fetches(self) -> int:
        return int(self.redis.get(TOKEN_FETCHES) or 0)
