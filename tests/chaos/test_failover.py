"""Redis Sentinel failover (issue 8): the primary is SIGKILLed, a replica is promoted, and the
producer, the ledger and a real Celery worker follow the new primary without being restarted.

One primary, one replica and three Sentinels run as real ``redis-server`` processes
(devstack.sentinel); the worker and beat run the pipeline's app with ``REDIS_SENTINELS`` /
``REDIS_SENTINEL_MASTER`` (Celery's broker through kombu's ``sentinel://`` transport), and the
refunds go to the sandbox over real HTTP. The time from the kill to the first successful write on
the new primary is measured and printed.

This is the groundwork (CI size); the full scenario of issue 8 part 4 (two workers, web, operator
actions in flight, a longer ``--run-slow`` variant) builds on the same helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from config.settings import Settings, load_settings
from devstack.localstack import (
    Child,
    find_redis_server,
    free_port,
    start_beat,
    start_flower,
    start_sandbox,
    start_web,
    start_worker,
    wait_for_worker,
    wait_until,
)
from devstack.sentinel import SentinelCluster, sentinel_cluster
from refunds import actions
from refunds.cli import EXIT_NOT_DURABLE
from refunds.errors import ConfigError, NotDurableError
from refunds.models import State
from refunds.producer import Producer
from refunds.store.ledger import Ledger, record_key
from tests.conftest import SANDBOX_TEST_CONFIG, TEST_ENV, SandboxAdmin, wait_final


def _redis_server_or_skip() -> None:
    try:
        find_redis_server()
    except ConfigError as exc:
        pytest.skip(f"no redis-server binary on this machine: {exc}")


@dataclass
class FailoverStack:
    cluster: SentinelCluster
    settings: Settings
    producer: Producer
    sandbox: SandboxAdmin
    worker: Child
    beat: Child

    def logs(self) -> str:
        return "\n".join([self.worker.tail(40), self.beat.tail(10), self.cluster.sentinel_log(10)])


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[FailoverStack]:
    _redis_server_or_skip()
    import json  # noqa: PLC0415 - only for the sandbox's config argument

    sandbox_child, sandbox_url = start_sandbox(
        tmp_path / "logs", config_json=json.dumps(SANDBOX_TEST_CONFIG)
    )
    children: list[Child] = [sandbox_child]
    try:
        with sentinel_cluster(tmp_path / "redis") as cluster:
            env = {**TEST_ENV, **cluster.env(), "MCE_BASE_URL": sandbox_url}
            overrides: dict[str, Any] = {
                key.removeprefix("REFUNDS_").lower(): value
                for key, value in TEST_ENV.items()
                if key.startswith("REFUNDS_")
            }
            settings = load_settings(
                **overrides,
                redis_url=env["REDIS_URL"],
                redis_sentinels=env["REDIS_SENTINELS"],
                redis_sentinel_master=env["REDIS_SENTINEL_MASTER"],
                mce_base_url=sandbox_url,
            )
            assert settings.uses_sentinel
            worker = start_worker(tmp_path / "logs", env, name="fo-worker", concurrency=4)
            children.append(worker)
            wait_for_worker(worker)
            beat = start_beat(tmp_path / "logs", env)
            children.append(beat)
            yield FailoverStack(
                cluster=cluster,
                settings=settings,
                producer=Producer(settings),
                sandbox=SandboxAdmin(sandbox_url),
                worker=worker,
                beat=beat,
            )
    finally:
        for child in reversed(children):
            child.stop()


def _intents(prefix: str, n: int) -> list[dict[str, object]]:
    return [
        {
            "originalTransactionType": 1,
            "originalTransactionId": f"{prefix}tx{i}",
            "clientReference": f"{prefix}{i}",
        }
        for i in range(n)
    ]


def _submit_all(
    producer: Producer, sandbox: SandboxAdmin, intents: list[dict[str, object]]
) -> list[str]:
    # The sandbox knows only the payments a test registers (a pending refund for each).
    sandbox.flag([str(i["originalTransactionId"]) for i in intents])
    for intent in intents:
        producer.submit(intent)
    return [str(i["clientReference"]) for i in intents]


def test_clients_and_worker_follow_a_sentinel_failover(failover: FailoverStack) -> None:
    prefix = f"fo{uuid.uuid4().hex[:8]}-"
    producer = failover.producer
    ledger: Ledger = producer.ledger
    worker_pid = failover.worker.proc.pid if failover.worker.proc else None

    # Before: refunds go through the Sentinel-managed primary.
    before = _submit_all(producer, failover.sandbox, _intents(prefix + "a", 8))
    records = wait_final(ledger, before, 60)
    assert {r.state for r in records} == {State.COMPLETED}

    # Refunds in flight when the primary dies (acknowledged writes, replicated or not).
    in_flight = _submit_all(producer, failover.sandbox, _intents(prefix + "b", 8))
    old = failover.cluster.kill_primary()
    killed_at = time.monotonic()
    killed_wall = time.time()  # history entries carry wall-clock times

    # The first write the same producer (same client, not rebuilt) gets through after the kill.
    probe = _intents(prefix + "c", 1)[0]
    failover.sandbox.flag([str(probe["originalTransactionId"])])
    first_write: float | None = None
    while time.monotonic() - killed_at < 60:
        try:
            producer.submit(probe)
            first_write = time.monotonic() - killed_at
            break
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            time.sleep(0.05)
    assert first_write is not None, f"no write succeeded after the kill:\n{failover.logs()}"
    new = failover.cluster.primary_port()
    assert new is not None and new != old
    print(f"\nfailover: first successful write on the new primary {first_write:.2f}s after kill")

    # After: new refunds through the same producer, and the same worker process consumes them.
    after = _submit_all(producer, failover.sandbox, _intents(prefix + "d", 8))
    refs = [*in_flight, str(probe["clientReference"]), *after]
    # In-flight intents are acknowledged to the caller; with asynchronous replication a write
    # the old primary had not replicated can be lost (WAIT closes that, issue 8 part 2). The
    # ones present must all finish; the post-failover ones must all be present and finish.
    present = {r.client_reference for r in ledger.get_many(refs)}
    lost = [ref for ref in in_flight if ref not in present]
    print(f"failover: in-flight intents acknowledged {len(in_flight)}, lost {len(lost)}")
    survivors = [ref for ref in refs if ref in present]
    assert set(after) | {str(probe["clientReference"])} <= present
    final = wait_final(ledger, survivors, 90)
    assert {r.state for r in final} == {State.COMPLETED}, failover.logs()
    steps_after = [
        h.at - killed_wall
        for r in final
        for h in r.history
        if h.from_state is not None and h.at >= killed_wall
    ]
    assert steps_after, "no step ran after the failover"
    print(f"failover: first step done by the worker {min(steps_after):.2f}s after kill")
    since_tick = ledger.since_last_tick()
    assert since_tick is not None and since_tick < 5, f"beat stopped ticking: {since_tick}"
    assert failover.worker.alive and failover.worker.proc is not None
    assert failover.worker.proc.pid == worker_pid, "the worker was restarted"
    assert failover.beat.alive, failover.beat.tail(40)
    worker_log = failover.worker.log_path.read_text(errors="replace")
    # The broker really went through Sentinel, and the consumer reconnected to the new primary.
    assert worker_log.count("Connected to sentinel://") >= 2, worker_log[-3000:]
    assert "'NoneType' object has no attribute" not in worker_log

    # One provider-side create per reference that reached the provider.
    effects = failover.sandbox.counters(prefix)["effects"]
    assert all(e["create"] == 1 for e in effects.values()), effects

    # The old primary comes back and the Sentinels make it a replica of the new one.
    failover.cluster.restart_node(old)
    assert failover.cluster.role(old) == "slave"
    assert failover.cluster.primary_port() == new


# --- durability: WAIT for replicas after the writes that cannot be redone (issue 8 part 2) -------

API_KEY = "failover-test-key"


def test_writes_wait_for_a_replica_and_fail_loudly_without_one(tmp_path: Path) -> None:
    _redis_server_or_skip()
    with sentinel_cluster(tmp_path / "redis") as cluster:
        env = {
            **TEST_ENV,
            **cluster.env(),
            "REFUNDS_MIN_REPLICA_ACKS": "1",
            "REFUNDS_REPLICA_ACK_TIMEOUT_MS": "300",
            "REFUNDS_API_KEY": API_KEY,
        }
        settings = load_settings(
            profile="sandbox",
            redis_url=env["REDIS_URL"],
            redis_sentinels=env["REDIS_SENTINELS"],
            redis_sentinel_master=env["REDIS_SENTINEL_MASTER"],
            min_replica_acks=1,
            replica_ack_timeout_ms=300,
        )
        producer = Producer(settings)
        primary = cluster.primary_port()
        replica = next(port for port in cluster.nodes if port != primary)
        replica_client = redis.Redis(host="127.0.0.1", port=replica, decode_responses=True)
        prefix = f"du{uuid.uuid4().hex[:8]}-"

        # With the replica up, an acknowledged intent is on the replica when submit returns.
        kept = _intents(prefix + "ok", 3)
        for intent in kept:
            producer.submit(intent)
            assert replica_client.exists(record_key(str(intent["clientReference"]))) == 1
        assert (
            actions.cancel(
                producer.ledger, settings, str(kept[0]["clientReference"]), actor="ops", reason="t"
            ).record.state
            == State.CANCELLED
        )

        # Without it, the write is not acknowledged: a typed error after the timeout.
        cluster.nodes[replica].kill()
        started = time.monotonic()
        with pytest.raises(NotDurableError) as caught:
            producer.submit(_intents(prefix + "lone", 1)[0])
        waited = time.monotonic() - started
        assert (caught.value.acked, caught.value.required) == (0, 1)
        assert 0.25 <= waited < 5, waited
        with pytest.raises(NotDurableError):
            actions.cancel(
                producer.ledger, settings, str(kept[1]["clientReference"]), actor="ops", reason="t"
            )

        # The CLI exits with its own code and one line.
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "refunds.cli",
                "submit",
                "--type",
                "1",
                "--txn-id",
                prefix + "cli-tx",
                "--ref",
                prefix + "cli",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert cli.returncode == EXIT_NOT_DURABLE, cli.stderr
        assert cli.stderr.strip().count("\n") == 0
        assert "not durably stored" in cli.stderr

        # The web answers 503 with Retry-After.
        port = free_port()
        web = start_web(tmp_path / "logs", env, port=port)
        try:
            wait_until(
                lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok,
                30,
                "web",
                web,
            )
            answer = requests.post(
                f"http://127.0.0.1:{port}/refunds",
                json=_intents(prefix + "web", 1)[0],
                headers={"X-API-Key": API_KEY},
                timeout=10,
            )
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "1"
            assert "not durably stored" in answer.json()["detail"]
        finally:
            web.stop()


def test_flower_reads_the_broker_through_sentinel(tmp_path: Path) -> None:
    """Flower started as the Procfile starts it gets the app's sentinel:// broker and options."""
    _redis_server_or_skip()
    with sentinel_cluster(tmp_path / "redis") as cluster:
        env = {**TEST_ENV, **cluster.env()}
        port = free_port()
        flower = start_flower(tmp_path / "logs", env, port=port, basic_auth="ops:flower-pw")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: requests.get(url + "/healthcheck", timeout=1).ok, 60, "flower")
            # The broker page asks the primary (found through Sentinel) for the queue lengths.
            page = requests.get(url + "/broker", auth=("ops", "flower-pw"), timeout=10)
            assert page.status_code == 200, flower.tail(40)
            assert "refunds.provider" in page.text, flower.tail(40)
            log = flower.log_path.read_text(errors="replace")
            assert "Broker: sentinel://" in log
            assert "Unable to get broker info" not in log and "Traceback" not in log
        finally:
            flower.stop()
