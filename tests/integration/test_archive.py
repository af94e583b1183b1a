"""The SQL archive with real parts: a private Redis, the sandbox sending webhooks, a real Celery
worker and beat running ``archive.drain``, the web app under uvicorn, and a real database: an
SQLite file and a PostgreSQL database this module creates on 127.0.0.1:5432 and drops at the end.

Each backend gets a stack of its own (the archive URL is a worker setting). Every case ends with
the same proof: once the archiver has caught up, SQL equals Redis for every refund (record,
every history line) and every stored webhook.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import requests
from alembic import command
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from devstack.processes import free_port
from devstack.stack import LocalStack
from devstack.wait import wait_until
from refunds.archive.db import alembic_config, engine_for
from refunds.archive.models import NotificationOutcome, RefundEvent, StoredWebhook
from refunds.archive.reads import ArchiveReader
from refunds.archive.retention import evict_expired
from refunds.store.archive_queue import ArchiveQueue
from refunds.store.events import EventStore
from refunds.store.keys import (
    ALL,
    ARCHIVED_REFS,
    event_key,
    history_key,
    record_key,
)
from refunds.store.ledger import Ledger
from tests.conftest import SANDBOX_TEST_CONFIG, TEST_ENV

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
KEY = {"X-API-Key": "sandbox-api-key"}


def _pg_available() -> bool:
    try:
        with create_engine(PG_ADMIN).connect() as conn:
            conn.execute(text("select 1"))
        return True
    except DBAPIError:
        return False


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    name = f"refunds_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class ArchiveStack:
    """One stack whose workers archive into ``url``."""

    def __init__(self, local: LocalStack, url: str, backend: str) -> None:
        self.local = local
        self.url = url
        self.backend = backend
        self.engine = engine_for(url)
        self.ledger = Ledger.from_url(local.redis_url)
        self.queue = ArchiveQueue(self.ledger.redis)
        self.reader = ArchiveReader(self.engine)
        self.http = requests.Session()

    def submit_all(self, refs: list[str]) -> None:
        """Make each refund's payment refundable at the sandbox, then submit it over HTTP."""
        self.local.sandbox_admin().flag([f"tx-{ref}" for ref in refs])
        for ref in refs:
            answer = self.submit(ref)
            assert answer.status_code == 201, answer.text

    def submit(self, ref: str, txn: str | None = None) -> requests.Response:
        intent = {
            "originalTransactionType": 1,
            "originalTransactionId": txn or f"tx-{ref}",
            "clientReference": ref,
        }
        return self.http.post(self.local.web_url + "/refunds", json=intent, headers=KEY, timeout=10)

    def wait_final(self, refs: list[str], timeout: float = 90.0) -> None:
        def done() -> bool:
            records = self.ledger.get_many(refs)
            return len(records) == len(refs) and all(r.is_final for r in records)

        wait_until(done, timeout, what=f"{len(refs)} refunds final")

    def wait_archived(self, timeout: float = 60.0) -> None:
        wait_until(lambda: self.ledger.outbox_count() == 0, timeout, what="notifications sent")
        wait_until(lambda: self.queue.lag().length == 0, timeout, what="archive queue drained")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.local.env}
        return subprocess.run(
            [sys.executable, "-m", "refunds.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def assert_sql_equals_redis(self, refs: list[str]) -> None:
        """Every refund's record and history, and every stored webhook, as Redis holds them."""
        hot = {r.client_reference: r for r in self.ledger.get_many(refs)}
        assert sorted(hot) == sorted(refs)
        archived = {r.client_reference: r for r in self.reader.find_many(refs)}
        for ref in refs:
            assert archived.get(ref) == hot[ref], ref
        with self.engine.connect() as conn:
            n_events = conn.execute(
                select(func.count()).where(RefundEvent.reference.in_(refs))
            ).scalar_one()
            table = StoredWebhook.__table__
            stored = {
                w["notification_id"]: w
                for w in conn.execute(
                    select(table).where(table.c.reference.in_(refs))
                ).mappings()
            }
        assert n_events == sum(len(r.history) for r in hot.values())  # no duplicate, none lost
        with self.engine.connect() as conn:
            outcomes = conn.execute(
                select(NotificationOutcome.reference, NotificationOutcome.channel).where(
                    NotificationOutcome.reference.in_(refs),
                    NotificationOutcome.outcome == "delivered",
                    # a queued outcome entry fans out to the channels this worker has (notify);
                    # the channels' deliveries are the notifications
                    NotificationOutcome.channel.in_(("task", "http")),
                )
            ).all()
        assert sorted(outcomes) == sorted((ref, "task") for ref in refs)
        events = EventStore(self.ledger.redis)
        in_redis = {}
        for key in self.ledger.redis.scan_iter(match=event_key("*"), count=1000):
            nid = str(key).removeprefix(event_key(""))
            if nid.startswith("parked:"):
                continue
            fields = events.get(nid)
            if fields.get("ref") in hot:
                in_redis[nid] = fields
        assert in_redis, "the sandbox sent no webhook for these refunds"
        assert sorted(stored) == sorted(in_redis)
        for nid, fields in in_redis.items():
            row = stored[nid]
            assert row["body"] == fields["body"]
            assert row["body_sha256"] == fields["hash"]
            assert row["status"] == fields["status"]
            assert row["verification"] == "verified"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"archive-{backend}")
    with contextlib.ExitStack() as cleanup:
        if backend == "postgresql":
            if not _pg_available():
                pytest.skip("no PostgreSQL on 127.0.0.1:5432")
            url = cleanup.enter_context(_pg_database())
        else:
            url = f"sqlite:///{workdir / 'archive.db'}"
        env = {
            **TEST_ENV,
            "REFUNDS_DATABASE_URL": url,
            "REFUNDS_ARCHIVE_INTERVAL": "0.25",
            "REFUNDS_ARCHIVE_BATCH": "50",
            # Outcome notifications as Celery messages nobody here consumes: each is delivered
            # (published) once, and that outcome is archived.
            "REFUNDS_NOTIFY_TASK": "merchant.refund_outcome",
        }
        local = cleanup.enter_context(LocalStack(workdir, base_env=env))
        local.start_redis()
        web_port = free_port()
        local.start_web(web_port)
        local.start_sandbox(
            config={**SANDBOX_TEST_CONFIG, "webhook_url": f"{local.web_url}/webhooks/mce"}
        )
        local.start_worker(concurrency=4)
        local.start_beat()
        local.wait_for_web(60)
        yield ArchiveStack(local, url, backend)


def _refs(n: int) -> list[str]:
    prefix = f"a{uuid.uuid4().hex[:8]}-"
    return [f"{prefix}{i}" for i in range(n)]


def test_archive_equals_redis_once_refunds_are_final(archive_stack: ArchiveStack) -> None:
    s = archive_stack
    refs = _refs(12)
    s.submit_all(refs)
    s.wait_final(refs)
    s.wait_archived()
    # A webhook may land after the record turned final: wait for every one to be archived too.
    time.sleep(1.0)
    s.wait_archived()
    s.assert_sql_equals_redis(refs)
    stats = json.loads(s.cli("stats", "--json").stdout)
    assert stats["archive"]["queued"] == 0


def _hold_database(s: ArchiveStack) -> contextlib.AbstractContextManager[None]:
    """Make the archive database unusable for the workers until the block ends."""

    @contextlib.contextmanager
    def sqlite_locked() -> Iterator[None]:
        conn = sqlite3.connect(s.url.removeprefix("sqlite:///"), timeout=1)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()

    @contextlib.contextmanager
    def pg_refused() -> Iterator[None]:
        name = s.url.rsplit("/", 1)[1]
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin.dispose()

    return sqlite_locked() if s.backend == "sqlite" else pg_refused()


def test_database_down_only_delays_the_archive(archive_stack: ArchiveStack) -> None:
    s = archive_stack
    s.wait_archived()
    refs = _refs(10)
    with _hold_database(s):
        s.submit_all(refs)
        s.wait_final(refs)
        time.sleep(3.0)  # several archiver rounds fail meanwhile
        lag = s.queue.lag()
        assert lag.length > 0
        assert lag.oldest_age > 2.0
    s.engine.dispose()
    s.wait_archived(90)
    time.sleep(1.0)
    s.wait_archived()
    s.assert_sql_equals_redis(refs)


def test_archiver_sigkilled_mid_drain_loses_and_doubles_nothing(
    archive_stack: ArchiveStack,
) -> None:
    s = archive_stack
    s.wait_archived()
    refs = _refs(60)
    with _hold_database(s):
        s.submit_all(refs)
        s.wait_final(refs, timeout=120)
    s.engine.dispose()
    queued = s.queue.lag().length
    assert queued > 100  # many batches of 50 to drain

    def some_archived() -> bool:
        with s.engine.connect() as conn:
            n = conn.execute(
                select(func.count()).where(RefundEvent.reference.in_(refs))
            ).scalar_one()
        return n > 0

    wait_until(some_archived, 60, what="the archiver's first batch")
    for worker in s.local.alive_workers():
        assert worker.proc is not None
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)
    assert s.queue.lag().length > 0, "the drain finished before the kill: nothing was tested"
    s.local.workers.clear()
    s.local.start_worker(concurrency=4)
    s.wait_archived(90)
    time.sleep(1.0)
    s.wait_archived()
    s.assert_sql_equals_redis(refs)


def test_past_retention_reads_and_intake_answer_from_the_archive(
    archive_stack: ArchiveStack,
) -> None:
    s = archive_stack
    refs = _refs(3)
    s.submit_all(refs)
    s.wait_final(refs)
    s.wait_archived()
    time.sleep(1.0)
    s.wait_archived()
    before = {
        ref: s.http.get(f"{s.local.web_url}/refunds/{ref}", headers=KEY, timeout=10).json()
        for ref in refs
    }
    time.sleep(1.1)
    evict_expired(s.queue, s.engine, retention=1.0)

    r = s.ledger.redis
    for ref in refs:
        assert not r.exists(record_key(ref), history_key(ref))
        assert r.zscore(ALL, ref) is None
        assert r.sismember(ARCHIVED_REFS, ref)
        got = s.http.get(f"{s.local.web_url}/refunds/{ref}", headers=KEY, timeout=10)
        assert got.status_code == 200
        assert got.json() == before[ref]
    status = s.cli("status", refs[0], "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == before[refs[0]]
    listed = s.cli("list", "--json", "--limit", "0")
    assert {refs[0], refs[1], refs[2]} <= {x["clientReference"] for x in json.loads(listed.stdout)}
    page = s.http.get(
        f"{s.local.web_url}/refunds",
        params={"state": before[refs[0]]["state"], "limit": 500},
        headers=KEY,
        timeout=10,
    ).json()
    assert set(refs) <= {x["clientReference"] for x in page["items"]}
    # Intake stays idempotent: the same intent answers the archived record, another is a 409.
    again = s.submit(refs[0])
    assert again.status_code == 200, again.text
    assert again.json()["clientReference"] == refs[0]
    assert again.json()["state"] == before[refs[0]]["state"]
    other = s.submit(refs[1], txn="another-transaction")
    assert other.status_code == 409, other.text
    assert not r.exists(record_key(refs[0]), record_key(refs[1]))


def test_events_are_append_only_in_the_database(archive_stack: ArchiveStack) -> None:
    s = archive_stack
    s.wait_archived()
    with pytest.raises(DBAPIError, match="append-only"), s.engine.begin() as conn:
        conn.execute(text("UPDATE refund_events SET reason = 'rewritten'"))
    with pytest.raises(DBAPIError, match="append-only"), s.engine.begin() as conn:
        conn.execute(text("DELETE FROM refund_events"))


def test_models_and_migrations_agree(archive_stack: ArchiveStack) -> None:
    command.check(alembic_config(archive_stack.url))  # raises when they differ


def test_schema_behind_stops_cli_and_worker_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    env = {
        **os.environ,
        **TEST_ENV,
        "REFUNDS_DATABASE_URL": url,
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    status = subprocess.run(
        [sys.executable, "-m", "refunds.cli", "status", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 2
    lines = status.stderr.strip().splitlines()
    assert len(lines) == 1 and "refunds db upgrade" in lines[0], status.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--concurrency", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 2, worker.stderr[-2000:]
    assert "refunds db upgrade" in worker.stderr
    upgraded = subprocess.run(
        [sys.executable, "-m", "refunds.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    check = subprocess.run(
        [sys.executable, "-m", "refunds.cli", "db", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_redis_restarted_from_its_aof_keeps_the_queue(archive_stack: ArchiveStack) -> None:
    """The queue is Redis data like the record it archives: entries written before Redis is
    SIGKILLed and restarted from its AOF are still there after, and the archiver takes them."""
    s = archive_stack
    s.wait_archived()
    refs = _refs(3)
    with _hold_database(s):
        s.submit_all(refs)
        s.wait_final(refs)
        time.sleep(1.5)  # appendfsync everysec: what is older than a second is on disk
        queued = s.queue.lag().length
        assert queued > 0
        assert s.local.redis is not None and s.local.redis.proc is not None
        os.killpg(s.local.redis.proc.pid, signal.SIGKILL)
        s.local.redis.proc.wait(10)
        port = urlsplit(s.local.redis_url).port
        s.local.start_redis(port)
        wait_until(lambda: _answers(s.ledger.redis), 30, what="redis back")
        assert s.queue.lag().length >= queued
    s.engine.dispose()
    s.wait_archived(90)
    time.sleep(1.0)
    s.wait_archived()
    s.assert_sql_equals_redis(refs)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
