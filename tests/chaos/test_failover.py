"""Redis Sentinel failover (issue 8): the primary is SIGKILLed, a replica is promoted, and the
producer, the ledger and a real Celery worker follow the new primary without being restarted.

One primary, one replica and three Sentinels run as real ``redis-server`` processes
(devstack.sentinel); the worker and beat run the pipeline's app with ``REDIS_SENTINELS`` /
``REDIS_SENTINEL_MASTER`` (Celery's broker through kombu's ``sentinel://`` transport), and the
refunds go to the sandbox over real HTTP. The time from the kill to the first successful write on
the new primary is measured and printed.

``test_failover_with_operators_webhooks_and_durable_intake`` is the full scenario of issue 8
part 4: two workers, beat and the web app (uvicorn) against the sandbox with webhooks on,
``REFUNDS_MIN_REPLICA_ACKS=1``, the approval policy holding some refunds; an operator cancels
and approves held refunds (``refunds.actions``, what ``refunds approve`` / ``cancel`` run) just
before the primary is SIGKILLed, while a merchant keeps submitting over HTTP (retrying every
answer but 200/201, as a merchant does). CI size: about 36
refunds and one kill; ``--run-slow``: 300 refunds and two kills (fail over, then fail back). It
prints one ``failover summary`` line with the figures of the issue's closing note.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
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
from refunds.cli.common import EXIT_NOT_DURABLE
from refunds.errors import ConfigError, NotDurableError, OperatorActionError
from refunds.models import State
from refunds.producer import Producer
from refunds.store.connection import redis_client
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

    sandbox_child, sandbox_url = start_sandbox(
        tmp_path / "logs", config_json=json.dumps(SANDBOX_TEST_CONFIG)
    )
    children: list[Child] = [sandbox_child]
    try:
        with sentinel_cluster(tmp_path / "redis") as cluster:
            env = {**TEST_ENV, **cluster.env(), "MCE_BASE_URL": sandbox_url}
            settings = load_settings(
                **_test_timings(),
                redis_url=env["REDIS_URL"],
                redis_sentinels=env["REDIS_SENTINELS"],
                redis_sentinel_master=env["REDIS_SENTINEL_MASTER"],
                mce_base_url=sandbox_url,
            )
            assert settings.uses_sentinel
            try:
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
                _stop_before_the_cluster(children)
    finally:
        for child in reversed(children):
            child.stop()


def _stop_before_the_cluster(children: list[Child]) -> None:
    """Stop the Celery and web processes (newest first) while their Redis is still up.

    Stopped after the cluster, each one's warm shutdown hangs on a broker that is gone until
    ``Child.stop`` gives up on it (10 s) and SIGKILLs it. The sandbox needs no Redis; the
    ``finally`` that started it stops it (stopping a stopped child again is a no-op).
    """
    for child in reversed(children):
        if child.name != "sandbox":
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


# The replica-ack budget of the durability test. Not a latency claim (bench 7 measures that: p99
# under 5 ms): the replica fsyncs each write (appendfsync always) on a disk the parallel CI run
# shares, and 300 ms once ran out under that load with the replica up. The failing half still
# proves the wait is bounded by it.
ACK_TIMEOUT_MS = 1000


def test_writes_wait_for_a_replica_and_fail_loudly_without_one(tmp_path: Path) -> None:
    _redis_server_or_skip()
    # A cancel asks MCE first (refunds.before_cancel): the sandbox answers "not found" for these.
    sandbox_child, sandbox_url = start_sandbox(tmp_path / "logs")
    with contextlib.ExitStack() as stop, sentinel_cluster(tmp_path / "redis") as cluster:
        stop.callback(sandbox_child.stop)
        env = {
            **TEST_ENV,
            **cluster.env(),
            "REFUNDS_MIN_REPLICA_ACKS": "1",
            "REFUNDS_REPLICA_ACK_TIMEOUT_MS": str(ACK_TIMEOUT_MS),
            "REFUNDS_API_KEY": API_KEY,
        }
        settings = load_settings(
            profile="sandbox",
            redis_url=env["REDIS_URL"],
            redis_sentinels=env["REDIS_SENTINELS"],
            redis_sentinel_master=env["REDIS_SENTINEL_MASTER"],
            min_replica_acks=1,
            replica_ack_timeout_ms=ACK_TIMEOUT_MS,
            mce_base_url=sandbox_url,
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
        assert ACK_TIMEOUT_MS / 1000 - 0.05 <= waited < ACK_TIMEOUT_MS / 1000 + 4, waited
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
        flower = start_flower(tmp_path / "logs", env, port=port, basic_auth="ops:flower-chaos-pw")
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: requests.get(url + "/healthcheck", timeout=1).ok, 60, "flower")
            # The broker page asks the primary (found through Sentinel) for the queue lengths.
            page = requests.get(url + "/broker", auth=("ops", "flower-chaos-pw"), timeout=10)
            assert page.status_code == 200, flower.tail(40)
            assert "refunds.provider" in page.text, flower.tail(40)
            log = flower.log_path.read_text(errors="replace")
            assert "Broker: sentinel://" in log
            assert "Unable to get broker info" not in log and "Traceback" not in log
        finally:
            flower.stop()


# --- the full scenario (issue 8 part 4) ---------------------------------------------------------

OPS_KEY = "failover-ops-key"
OPS = {"X-API-Key": OPS_KEY}
HOOK_SECRET = "whsec-failover-5e1d"
BIG = "500.00"  # above the approval threshold below: held for an operator
SMALL = "10.00"


@dataclass(frozen=True)
class Size:
    before: int  # refunds submitted (and mostly finished) before the kill
    big: int  # of those, held for approval
    cancel: int  # held refunds an operator cancels just before the kill
    approve: int  # held refunds an operator approves just before the kill
    during: int  # refunds a merchant submits while the primary dies
    interval: float  # seconds between the merchant's submits
    kills: int  # 1: fail over; 2: fail over, then fail back


CI = Size(before=22, big=8, cancel=3, approve=3, during=14, interval=0.15, kills=1)
LONG = Size(before=200, big=40, cancel=12, approve=12, during=100, interval=0.1, kills=2)


class Merchant(threading.Thread):
    """Submits intents over HTTP one after another, each until it is acknowledged (200/201).

    A 503 ("not durably stored, retry"), a 5xx or a connection error is not an acknowledgement:
    the same intent is sent again, as a merchant's client does. ``acked`` maps a reference to the
    monotonic time of its acknowledgement; ``refused`` counts the other answers by status.
    """

    def __init__(self, url: str, intents: list[dict[str, object]], interval: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.intents = intents
        self.interval = interval
        self.acked: dict[str, float] = {}
        self.refused: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        http = requests.Session()
        for intent in self.intents:
            ref = str(intent["clientReference"])
            while not self.stop.is_set():
                try:
                    answer = http.post(self.url + "/refunds", json=intent, headers=OPS, timeout=5)
                    code = str(answer.status_code)
                except requests.RequestException as exc:
                    code = type(exc).__name__
                if code in ("200", "201"):
                    self.acked[ref] = time.monotonic()
                    break
                self.refused[code] = self.refused.get(code, 0) + 1
                time.sleep(0.1)
            if self.stop.is_set():
                return
            time.sleep(self.interval)


def _operator(ledger: Ledger, settings: Settings, ref: str, action: str, deadline: float) -> None:
    """An operator's action (``refunds.actions``, what ``refunds approve|cancel`` runs), retried
    until acknowledged: with ``REFUNDS_MIN_REPLICA_ACKS=1`` it answers only once a replica has it,
    and raises NotDurableError (or a connection error mid-failover) otherwise."""
    act = {"approve": actions.approve, "cancel": actions.cancel}[action]
    last = ""
    while time.monotonic() < deadline:
        try:
            act(ledger, settings, ref, actor="ops-ann", reason=f"failover test {action}")
            return
        except (NotDurableError, redis.ConnectionError, redis.TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        except OperatorActionError as exc:
            # A retry after a "not durably stored" answer finds its own earlier write.
            done = State.CANCELLED if action == "cancel" else None
            record = ledger.get(ref)
            if (done and record.state == done) or (action == "approve" and record.approved_by):
                return
            raise AssertionError(f"{action} {ref}: {exc}") from exc
        time.sleep(0.2)
    raise AssertionError(f"{action} {ref} not acknowledged: {last}")


def _intent(prefix: str, i: int) -> dict[str, object]:
    return {
        "originalTransactionType": 1,
        "originalTransactionId": f"{prefix}tx{i}",
        "clientReference": f"{prefix}{i}",
    }


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(CI, id="ci"),
        pytest.param(LONG, id="long", marks=[pytest.mark.slow, pytest.mark.timeout(1200)]),
    ],
)
def test_failover_with_operators_webhooks_and_durable_intake(size: Size, tmp_path: Path) -> None:
    _redis_server_or_skip()
    logs = tmp_path / "logs"
    prefix = f"ha{uuid.uuid4().hex[:6]}-"
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    sandbox_child, sandbox_url = start_sandbox(
        logs,
        config_json=json.dumps(
            {
                **SANDBOX_TEST_CONFIG,
                "processing_seconds": 1.5,
                "latency_ms": 30,
                # Webhooks a little late, so the workers' polls (0.2-0.5 s) finish the refunds
                # in flight at the kill: their first step shows when the workers resumed.
                "webhook_delay_ms": 1500,
            }
        ),
        extra_args=["--webhook-url", web_url + "/webhooks/mce", "--webhook-secret", HOOK_SECRET],
    )
    sandbox = SandboxAdmin(sandbox_url)
    children: list[Child] = [sandbox_child]
    merchant: Merchant | None = None
    try:
        with sentinel_cluster(tmp_path / "redis") as cluster, contextlib.ExitStack() as cleanup:
            cleanup.callback(_stop_before_the_cluster, children)
            env = {
                **TEST_ENV,
                **cluster.env(),
                "MCE_BASE_URL": sandbox_url,
                "MCE_WEBHOOK_SECRET": HOOK_SECRET,
                "REFUNDS_API_KEY": OPS_KEY,
                "REFUNDS_MIN_REPLICA_ACKS": "1",
                "REFUNDS_REPLICA_ACK_TIMEOUT_MS": "1000",
                "REFUNDS_APPROVAL_THRESHOLDS": "USDT=100",
            }
            web = start_web(logs, env, port=web_port, name="ha-web")
            children.append(web)
            workers = [start_worker(logs, env, name=f"ha-worker{n}", concurrency=3) for n in (1, 2)]
            children += workers
            for worker in workers:
                wait_for_worker(worker, timeout=120)
            beat = start_beat(logs, env, name="ha-beat")
            children.append(beat)
            wait_until(lambda: requests.get(web_url + "/healthz", timeout=1).ok, 60, "web", web)
            pids = {c.name: c.proc.pid for c in (web, beat, *workers) if c.proc is not None}
            # The operator's settings: the same deployment, WAIT included, and the same timings
            # as the workers (an approval's safety-net timer is the operator's lease_seconds).
            ops = load_settings(
                **_test_timings(),
                **_redis(env),
                min_replica_acks=1,
                replica_ack_timeout_ms=1000,
                approval_thresholds=env["REFUNDS_APPROVAL_THRESHOLDS"],
                mce_base_url=sandbox_url,  # a cancel asks MCE first
            )
            ledger = Ledger(redis_client(ops))

            def logs_tail() -> str:
                return "\n".join([*(c.tail(25) for c in children), cluster.sentinel_log(8)])

            # Before: refunds of every size; the big ones are held for an operator.
            before = [_intent(prefix + "a", i) for i in range(size.before)]
            big = [str(i["clientReference"]) for i in before[: size.big]]
            sandbox.flag([str(i["originalTransactionId"]) for i in before[: size.big]], amount=BIG)
            sandbox.flag(
                [str(i["originalTransactionId"]) for i in before[size.big :]], amount=SMALL
            )
            http = requests.Session()
            for intent in before:
                answer = http.post(web_url + "/refunds", json=intent, headers=OPS, timeout=10)
                assert answer.status_code == 201, answer.text
            wait_until(
                lambda: all(r.state == State.AWAITING_APPROVAL for r in ledger.get_many(big)),
                60,
                "big refunds held for approval",
            )
            small = [str(i["clientReference"]) for i in before[size.big :]]
            wait_until(
                lambda: all(r.state == State.COMPLETED for r in ledger.get_many(small)),
                60,
                "small refunds completed",
            )
            during = [_intent(prefix + "b", i) for i in range(size.during)]
            sandbox.flag([str(i["originalTransactionId"]) for i in during], amount=SMALL)

            # Just before the kill: an operator cancels some held refunds and approves others.
            cancelled = big[: size.cancel]
            approved = big[size.cancel : size.cancel + size.approve]
            later = big[size.cancel + size.approve :]
            for ref in cancelled:
                _operator(ledger, ops, ref, "cancel", time.monotonic() + 10)
            for ref in approved:
                _operator(ledger, ops, ref, "approve", time.monotonic() + 10)

            # A merchant keeps submitting while the primary dies; kill once refunds are in flight.
            merchant = Merchant(web_url, during, size.interval)
            merchant.start()
            in_flight = (State.RECEIVED, State.CREATING, State.CREATED, State.CONFIRMING)
            wait_until(
                lambda: (
                    State.PROCESSING in {r.state for r in ledger.get_many(list(merchant.acked))}
                ),
                30,
                "merchant refunds in flight",
            )
            snapshot: dict[str, int] = {}
            for record in ledger.get_many([str(i["clientReference"]) for i in before + during]):
                snapshot[str(record.state)] = snapshot.get(str(record.state), 0) + 1
            print(f"\nfailover: states at the kill {snapshot}")
            assert {"completed", "cancelled", "awaiting_approval"} <= set(snapshot), snapshot
            assert {str(s) for s in (*in_flight, State.PROCESSING)} & set(snapshot), snapshot

            resume: list[float] = []
            kill_walls: list[float] = []
            for n in range(size.kills):
                old = cluster.kill_primary()
                killed_wall = time.time()
                kill_walls.append(killed_wall)
                new = cluster.wait_promotion(old, timeout=60)
                promoted = time.time() - killed_wall
                # Until the old primary is back as a replica (Sentinel converts it on its next
                # INFO round: 2-3 s with the test cluster's periods, 10 s or more with Sentinel's
                # defaults), WAIT cannot be satisfied: intake and operators get
                # 503s (retried) while the steps (no WAIT: redone under the same key) go on.
                cluster.restart_node(old, timeout=60)
                assert cluster.role(old) == "slave" and cluster.primary_port() == new
                print(
                    f"failover: kill {n + 1}: {old} -> {new} promoted after {promoted:.2f}s, "
                    f"old primary a replica again after {time.time() - killed_wall:.2f}s"
                )
                if n + 1 < size.kills:
                    time.sleep(4.0)

            # The merchant gets every intent acknowledged; the operator approves the rest.
            wait_until(lambda: len(merchant.acked) == len(during), 90, "every intent acknowledged")
            merchant.stop.set()
            merchant.join(timeout=10)
            for ref in later:
                _operator(ledger, ops, ref, "approve", time.monotonic() + 30)

            acknowledged = [str(i["clientReference"]) for i in before] + list(merchant.acked)
            present = {r.client_reference for r in ledger.get_many(acknowledged)}
            lost = sorted(set(acknowledged) - present)
            assert not lost, f"acknowledged intents lost: {lost}"
            rest = [ref for ref in acknowledged if ref not in cancelled]
            records = wait_final(ledger, rest, 120)
            assert {r.state for r in records} == {State.COMPLETED}, (
                {r.client_reference: str(r.state) for r in records if r.state != State.COMPLETED},
                logs_tail(),
            )
            assert {r.state for r in ledger.get_many(cancelled)} == {State.CANCELLED}

            # The provider: one create per reference, no Confirm of a cancelled refund.
            effects = sandbox.counters(prefix)["effects"]
            duplicates = sorted(ref for ref, e in effects.items() if e.get("create", 0) > 1)
            confirmed_cancelled = sorted(
                ref for ref in cancelled if effects.get(ref, {}).get("confirm", 0) > 0
            )
            cancelled_ids = {
                r.crypto_refund_id for r in ledger.get_many(cancelled) if r.crypto_refund_id
            }
            recorded = (
                requests.get(
                    sandbox_url + "/sandbox/requests", params={"operation": "confirm"}, timeout=5
                )
                .json()["requests"]
                .get("confirm", [])
            )
            confirm_bodies = [json.dumps(entry.get("body")) for entry in recorded]
            assert not [c for c in cancelled_ids if any(c in body for body in confirm_bodies)]
            assert not duplicates, {ref: effects[ref] for ref in duplicates}
            assert not confirmed_cancelled, confirmed_cancelled
            assert all(effects.get(ref, {}).get("create") == 1 for ref in rest)

            # Time to resume: the first transition written after each kill (by a worker's step or
            # the web app's webhook), and the first a worker's step wrote.
            resume_any: list[float] = []
            for killed_wall in kill_walls:
                after = [
                    (h.at - killed_wall, h.actor)
                    for r in ledger.get_many(acknowledged)
                    for h in r.history
                    if h.from_state is not None and h.at > killed_wall
                ]
                steps_after = [t for t, actor in after if actor == "pipeline"]
                assert steps_after, f"no step ran after a kill:\n{logs_tail()}"
                resume.append(min(steps_after))
                resume_any.append(min(t for t, _ in after))
            assert max(resume) < 30, resume
            reconnect = [_reconnected_after(workers, killed_wall) for killed_wall in kill_walls]

            # No process was restarted by hand: the same pids, all alive.
            now_pids = {c.name: c.proc.pid for c in (web, beat, *workers) if c.proc is not None}
            assert now_pids == pids
            assert all(c.alive for c in (web, beat, *workers)), logs_tail()
            for worker in workers:
                text = worker.log_path.read_text(errors="replace")
                assert "'NoneType' object has no attribute" not in text, text[-3000:]
            print(
                "failover summary: "
                f"refunds {len(before) + len(during)}, kills {size.kills}, "
                f"intents acknowledged {len(acknowledged)}, present afterwards "
                f"{len(present)}, lost {len(lost)}, cancelled {len(cancelled)}, "
                f"cancelled-then-confirmed {len(confirmed_cancelled)}, "
                f"duplicate creates {len(duplicates)}, "
                "workers' broker reconnected after each kill "
                f"{', '.join(f'{s:.2f}s' for s in reconnect)}, "
                "first worker step after each kill "
                f"{', '.join(f'{s:.2f}s' for s in resume)} (any transition "
                f"{', '.join(f'{s:.2f}s' for s in resume_any)}), "
                f"intake answers refused meanwhile {merchant.refused}"
            )
    finally:
        if merchant is not None:
            merchant.stop.set()
        for child in reversed(children):
            child.stop()


def _test_timings() -> dict[str, Any]:
    """The suite's ``TEST_ENV`` timings as ``load_settings`` arguments (what the workers run)."""
    return {
        key.removeprefix("REFUNDS_").lower(): value
        for key, value in TEST_ENV.items()
        if key.startswith("REFUNDS_")
    }


def _redis(env: dict[str, str]) -> dict[str, Any]:
    return {
        "redis_url": env["REDIS_URL"],
        "redis_sentinels": env["REDIS_SENTINELS"],
        "redis_sentinel_master": env["REDIS_SENTINEL_MASTER"],
    }


def _reconnected_after(workers: list[Child], killed_wall: float) -> float:
    """Seconds from ``killed_wall`` until every worker logged its broker connection again."""
    latest = 0.0
    for worker in workers:
        first: float | None = None
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if "Connected to sentinel://" not in line or not line.startswith("{"):
                continue
            at = datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
            if at > killed_wall:
                first = at - killed_wall
                break
        assert first is not None, f"{worker.name} never reconnected:\n{worker.tail(30)}"
        latest = max(latest, first)
    return latest


def test_a_dead_sentinel_listed_first_costs_no_seconds(tmp_path: Path) -> None:
    """The Sentinels' own clients try each Sentinel once: a dead one (often part of the very
    incident that causes a failover) is skipped at once, not retried with backoff for seconds
    (redis-py's default retry) before the next Sentinel is asked for the primary."""
    _redis_server_or_skip()
    with sentinel_cluster(tmp_path / "redis") as cluster:
        env = cluster.env()
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        settings = load_settings(
            profile="sandbox",
            redis_url=env["REDIS_URL"],
            redis_sentinels=f"{dead},{env['REDIS_SENTINELS']}",
            redis_sentinel_master=env["REDIS_SENTINEL_MASTER"],
        )
        client = redis_client(settings)
        started = time.monotonic()
        assert client.ping()
        took = time.monotonic() - started
        assert took < 1.0, f"finding the primary past a dead Sentinel took {took:.1f}s"
