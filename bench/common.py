"""Small pieces shared by the benchmarks: figures with targets, waiting, percentiles, intents."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from refunds.models import RefundIntent


@dataclass
class Figure:
    """One measured number, its target (if it has one) and whether the target was met."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None  # None: no target, information only
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Result:
    """What one benchmark hands back: its figures, how they were measured, and raw details."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    method: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["figures"] = [f.to_dict() for f in self.figures]
        return out


def at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def at_most(value: float | None, target: float) -> bool | None:
    return None if value is None else value <= target


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def txn_id(ref: str) -> str:
    return f"tx-{ref}"


def intents(refs: Sequence[str]) -> list[RefundIntent]:
    return [
        RefundIntent(
            original_transaction_type=1, original_transaction_id=txn_id(r), client_reference=r
        )
        for r in refs
    ]


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def refs(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


@dataclass(frozen=True)
class Plan:
    """How big each benchmark is; ``FULL`` and ``QUICK`` below."""

    name: str
    workers: int = 2  # worker processes (benchmarks 1, 2 and 4)
    concurrency: int = 4  # prefork pool size per worker process (all benchmarks)
    throughput_refunds: int = 2_000
    throughput_rounds: int = 2  # pipeline and bare runs, alternating
    events_off_run: bool = True
    pacing_workers: tuple[int, ...] = (1, 2, 4)
    pacing_refunds: int = 1_500
    pacing_warmup: float = 3.0
    pacing_window: float = 10.0
    inflight_refunds: int = 100_000
    inflight_poll_rate: float = 40.0  # polls/s the spread timers come due at
    inflight_window: float = 90.0
    inflight_populate_processes: int = 2
    submit_intents: int = 20_000


FULL = Plan("full")
QUICK = Plan(
    "quick",
    throughput_refunds=500,
    throughput_rounds=1,
    events_off_run=False,
    pacing_refunds=600,
    pacing_warmup=2.0,
    pacing_window=5.0,
    inflight_refunds=10_000,
    inflight_window=20.0,
    submit_intents=5_000,
)
