"""Operational counters shared by every process, shaped for ``/metrics`` and ``refunds stats``.

The counters live in Redis (keys and writes in ``refunds.store.counters``; the key table in
``refunds.store.keys``): per-process Prometheus registries would each see a slice of a cluster.
This module only reads and aggregates them; ``Stats`` is the store's ``Counters`` plus those reads,
so the context hands one object to writers and readers alike.
"""

from __future__ import annotations

import time
from collections import Counter

from refunds.store.counters import LATENCY_BUCKETS, Counters

__all__ = ["LATENCY_BUCKETS", "Stats"]


class Stats(Counters):
    """Writes (inherited from the store) and reads of the shared counters."""

    def calls(self) -> dict[tuple[str, str], int]:
        """``(operation, outcome) -> count``; outcome is an HTTP status, ``timeout`` (no whole
        answer within the call's deadline), ``connection``, ``oversized`` (an answer over the
        cap), ``interrupted`` (the task was stopped mid-call) or ``throttled`` (not sent).
        Every request sent is counted once, whatever its outcome."""
        out: dict[tuple[str, str], int] = {}
        for field, value in self.calls_raw().items():
            operation, _, outcome = str(field).partition("|")
            out[(operation, outcome)] = int(value)
        return out

    def latency(self) -> dict[str, dict[str, float]]:
        """Per operation: bucket upper bound (or "sum") -> value, as stored (not cumulative)."""
        out: dict[str, dict[str, float]] = {}
        for field, value in self.latency_raw().items():
            operation, _, bucket = str(field).partition("|")
            out.setdefault(operation, {})[bucket] = float(value)
        return out

    def errors_since(self, seconds: float = 3600) -> Counter[str]:
        """Error codes recorded in the last ``seconds`` (minute resolution)."""
        now_minute = int(time.time() // 60)
        minutes = range(now_minute - int(seconds // 60), now_minute + 1)
        total: Counter[str] = Counter()
        for counts in self.errors_raw(minutes):
            for code, n in counts.items():
                total[str(code)] += int(n)
        return total

    def webhooks(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.webhooks_raw().items()}

    def conflicts(self) -> dict[str, int]:
        """Provider conflict kind -> times seen (news contradicting a final state)."""
        return {str(k): int(v) for k, v in self.conflicts_raw().items()}
