"""The benchmark's private stack: Redis, the sandbox, pipeline or bare workers, beat.

Everything is a child process of a ``devstack.stack.LocalStack`` (the same stack the demo, the
tests and the chaos harness use), in a temporary directory that is removed at the end. Redis runs
without AOF: the benchmarks measure the pipeline, not the disk.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from config.settings import Settings, load_settings
from devstack.processes import Child, wait_for_worker
from devstack.sandbox_admin import SandboxAdmin
from devstack.stack import LocalStack

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


def provider_calls(counters: dict[str, Any]) -> dict[str, int]:
    return {op: int(n) for op, n in counters["calls"].items()}


@dataclass
class BenchStack(LocalStack):
    """One Redis and one sandbox for the whole run; workers and beat per benchmark.

    A ``LocalStack`` in a temporary directory (removed by ``close`` unless ``keep``).
    """

    keep: bool = False

    @cached_property
    def admin(self) -> SandboxAdmin:
        """The sandbox's admin API, with a minute for the big payment lists benchmarks flag."""
        return self.sandbox_admin(timeout=60)

    @classmethod
    def start(cls, keep: bool = False) -> BenchStack:
        stack = cls(Path(tempfile.mkdtemp(prefix="refunds-bench-")), keep=keep)
        try:
            stack.start_redis(appendonly=False)
            stack.start_sandbox()
        except BaseException:
            stack.stop()
            raise
        return stack

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(
            profile="sandbox", redis_url=self.redis_url, mce_base_url=self.sandbox_url, **overrides
        )

    def pipeline_env(self, **extra: str) -> dict[str, str]:
        return {**PIPELINE_ENV, **self.env, **extra}

    def bare_env(self, events: bool, poll_schedule: str) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_SANDBOX_URL": self.sandbox_url,
            "BENCH_POLL_SCHEDULE": poll_schedule,
            "BENCH_EVENTS": "1" if events else "0",
        }

    # --- workers and beat ---------------------------------------------------------------------

    def _start_workers(
        self, count: int, concurrency: int, env: dict[str, str], name: str = "worker", **kw: str
    ) -> list[Child]:
        first = len(self.workers) + 1
        started = [
            self.start_worker(
                f"{name}{first + i}", concurrency=concurrency, env=env, wait=None, **kw
            )
            for i in range(count)
        ]
        for child in started:
            wait_for_worker(child, timeout=120)
        return started

    def start_pipeline_workers(
        self, count: int, concurrency: int, env: dict[str, str], beat: bool = True
    ) -> list[Child]:
        started = self._start_workers(count, concurrency, env)
        if beat:
            self.start_beat(f"beat{len(self.workers)}", env)
        return started

    def start_bare_workers(self, count: int, concurrency: int, env: dict[str, str]) -> list[Child]:
        """Workers of the bare app, with exactly the options ``start_worker`` gives the pipeline's
        (prefork, same concurrency, no mingle, no gossip, INFO logs)."""
        return self._start_workers(
            count, concurrency, env, name="bare", queues=BARE_QUEUE, app="bench.bare"
        )

    def celery_pids(self) -> list[int]:
        """Root pids of the running workers and beat (their trees hold the pool processes)."""
        children = [*self.workers, *([self.beat] if self.beat else [])]
        return [c.proc.pid for c in children if c.proc is not None and c.alive]

    def worker_pids(self) -> list[int]:
        return [c.proc.pid for c in self.workers if c.proc is not None and c.alive]

    def clean(self, **sandbox_config: Any) -> None:
        """Stop workers and beat, empty Redis, reset the sandbox: the next benchmark starts cold."""
        self.stop_celery()
        self.client().flushall()
        self.admin.reset(**sandbox_config)
        time.sleep(0.2)

    def redis_info(self, section: str) -> dict[str, Any]:
        return dict(self.client().info(section))

    def close(self) -> None:
        self.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def sandbox_config(**overrides: Any) -> dict[str, Any]:
    """The sandbox as the benchmarks use it: no latency, no faults, a day-long token."""
    return {"latency_ms": 0, "token_ttl_seconds": 86_400, **overrides}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
