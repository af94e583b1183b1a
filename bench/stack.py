"""The benchmark's private stack: Redis, the sandbox, pipeline or bare workers, beat.

Everything is a child process started through ``devstack.localstack`` (the same helpers the demo and
the tests use), in a temporary directory that is removed at the end. Redis runs without AOF: the
benchmarks measure the pipeline, not the disk.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

from config.settings import Settings, load_settings
from devstack.localstack import (
    Child,
    start_beat,
    start_redis,
    start_sandbox,
    start_worker,
    wait_for_worker,
)

# Timings for every pipeline benchmark (production defaults otherwise): a quick scheduler tick and
# a short first poll, so a run of a few thousand refunds is not dominated by waiting.
PIPELINE_ENV = {
    "REFUNDS_PROFILE": "sandbox",
    "REFUNDS_POLL_SCHEDULE": "0.5,1,2,5",
    "REFUNDS_TICK_INTERVAL": "0.25",
    "REFUNDS_LOG_LEVEL": "INFO",
    "REFUNDS_LOG_JSON": "true",
}
BARE_QUEUE = "bench.bare"


class SandboxAdmin:
    """The simulator's admin API (``/sandbox/...``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def _post(self, path: str, body: Any = None) -> Any:
        r = self.http.post(self.url + path, json=body, timeout=60)
        r.raise_for_status()
        return r.json()

    def reset(self, **config: Any) -> None:
        self._post("/sandbox/reset", config)

    def flag(self, txn_ids: Iterable[str], chunk: int = 10_000) -> None:
        batch: list[dict[str, Any]] = []
        for txn in txn_ids:
            batch.append({"originalTransactionType": 1, "originalTransactionId": txn})
            if len(batch) >= chunk:
                self._post("/sandbox/payments", {"payments": batch})
                batch = []
        if batch:
            self._post("/sandbox/payments", {"payments": batch})

    def counters(self) -> dict[str, Any]:
        # A prefix nobody uses keeps the per-reference effects (one entry per refund) out.
        r = self.http.get(self.url + "/sandbox/counters", params={"prefix": "\x00"}, timeout=60)
        r.raise_for_status()
        return dict(r.json())


def provider_calls(counters: dict[str, Any]) -> dict[str, int]:
    return {op: int(n) for op, n in counters["calls"].items()}


@dataclass
class BenchStack:
    """One Redis and one sandbox for the whole run; workers and beat per benchmark."""

    workdir: Path
    redis_child: Child
    redis_url: str
    sandbox_child: Child
    sandbox_url: str
    keep: bool = False
    workers: list[Child] = field(default_factory=list)
    beat: Child | None = None
    _n: int = 0

    @classmethod
    def start(cls, keep: bool = False) -> BenchStack:
        workdir = Path(tempfile.mkdtemp(prefix="refunds-bench-"))
        redis_child, redis_url = start_redis(workdir / "redis", appendonly=False)
        try:
            sandbox_child, sandbox_url = start_sandbox(workdir / "logs")
        except BaseException:
            redis_child.stop()
            raise
        return cls(workdir, redis_child, redis_url, sandbox_child, sandbox_url, keep)

    @property
    def logdir(self) -> Path:
        return self.workdir / "logs"

    @property
    def admin(self) -> SandboxAdmin:
        return SandboxAdmin(self.sandbox_url)

    def redis(self, decode: bool = True) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=decode)

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(
            profile="sandbox", redis_url=self.redis_url, mce_base_url=self.sandbox_url, **overrides
        )

    def pipeline_env(self, **extra: str) -> dict[str, str]:
        return {
            **PIPELINE_ENV,
            "REDIS_URL": self.redis_url,
            "MCE_BASE_URL": self.sandbox_url,
            **extra,
        }

    def bare_env(self, events: bool, poll_schedule: str) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_SANDBOX_URL": self.sandbox_url,
            "BENCH_POLL_SCHEDULE": poll_schedule,
            "BENCH_EVENTS": "1" if events else "0",
        }

    # --- workers and beat ---------------------------------------------------------------------

    def start_pipeline_workers(
        self, count: int, concurrency: int, env: dict[str, str], beat: bool = True
    ) -> list[Child]:
        started = []
        for _ in range(count):
            self._n += 1
            started.append(
                start_worker(self.logdir, env, name=f"worker{self._n}", concurrency=concurrency)
            )
        for child in started:
            wait_for_worker(child, timeout=120)
        self.workers += started
        if beat:
            self.beat = start_beat(self.logdir, env, name=f"beat{self._n}")
        return started

    def start_bare_workers(self, count: int, concurrency: int, env: dict[str, str]) -> list[Child]:
        """Workers of the bare app, with exactly the options ``start_worker`` gives the pipeline's
        (prefork, same concurrency, no mingle, no gossip, INFO logs)."""
        started = []
        for _ in range(count):
            self._n += 1
            name = f"bare{self._n}"
            started.append(
                start_worker(
                    self.logdir,
                    env,
                    name=name,
                    concurrency=concurrency,
                    queues=BARE_QUEUE,
                    app="bench.bare",
                )
            )
        for child in started:
            wait_for_worker(child, timeout=120)
        self.workers += started
        return started

    def celery_pids(self) -> list[int]:
        """Root pids of the running workers and beat (their trees hold the pool processes)."""
        children = [*self.workers, *([self.beat] if self.beat else [])]
        return [c.proc.pid for c in children if c.proc is not None and c.alive]

    def worker_pids(self) -> list[int]:
        return [c.proc.pid for c in self.workers if c.proc is not None and c.alive]

    def stop_celery(self) -> None:
        if self.beat is not None:
            self.beat.stop(timeout=10)
            self.beat = None
        for child in self.workers:
            child.stop(timeout=15)
        self.workers = []

    def clean(self, **sandbox_config: Any) -> None:
        """Stop workers and beat, empty Redis, reset the sandbox: the next benchmark starts cold."""
        self.stop_celery()
        self.redis().flushall()
        self.admin.reset(**sandbox_config)
        time.sleep(0.2)

    def redis_info(self, section: str) -> dict[str, Any]:
        return dict(self.redis().info(section))

    def close(self) -> None:
        self.stop_celery()
        self.sandbox_child.stop()
        self.redis_child.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def sandbox_config(**overrides: Any) -> dict[str, Any]:
    """The sandbox as the benchmarks use it: no latency, no faults, a day-long token."""
    return {"latency_ms": 0, "token_ttl_seconds": 86_400, **overrides}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
