"""Outcome notifications to merchant apps, end to end, over both channels.

(a) The Celery-task channel: a stand-in merchant app (``tests/integration/merchant_app.py``, its own
Celery app sharing only the broker) runs as a real worker process on the ``merchant`` queue; the
pipeline's worker is told ``REFUNDS_NOTIFY_TASK=merchant.refund_final`` and
``REFUNDS_NOTIFY_QUEUE=merchant``. (b) The HTTP channel: a receiver in this process checks every
callback's signature and answers 500 to the first two, so delivery retries are exercised.

Each test has its own worker and beat on a database of its own (9 and 10) of the private Redis,
against the session's sandbox. Delivery is at least once, so the merchant side de-duplicates on
``notificationId``, as a merchant app would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from config.settings import DEFAULT_NOTIFY_QUEUE, PIPELINE_QUEUES, Settings, load_settings
from devstack.processes import Child, free_port, start_beat, start_worker, wait_for_worker
from refunds import actions
from refunds.context import build_context
from refunds.models import State
from refunds.notify import ATTEMPTS, DEAD, notification_id
from refunds.ops.metrics import render_metrics
from refunds.producer import Producer
from refunds.store.ledger import OUTBOX, Ledger
from refunds.store.outbox import Outbox
from tests.conftest import TEST_ENV, SandboxAdmin, wait_final
from tests.integration import merchant_app

REPO = Path(__file__).resolve().parents[2]
SECRET = "merchant-callback-secret-for-tests"  # a test value, not a credential
REFUSE_FIRST = 2  # the receiver answers 500 to this many requests, then 200


@dataclass
class Cluster:
    url: str
    settings: Settings
    ledger: Ledger
    producer: Producer
    children: list[Child] = field(default_factory=list)

    def submit(self, sandbox: SandboxAdmin, refs: list[str], *, flag: bool = True) -> None:
        if flag:
            sandbox.flag([f"tx-{r}" for r in refs], amount="25.00", currency="USDT")
        for ref in refs:
            self.producer.submit(
                {
                    "originalTransactionType": 1,
                    "originalTransactionId": f"tx-{ref}",
                    "clientReference": ref,
                }
            )

    def outbox_drained(self) -> bool:
        return self.ledger.redis.zcard(OUTBOX) == 0

    def logs(self) -> str:
        return "\n".join(c.tail(40) for c in self.children)


def _start(
    url: str,
    env: dict[str, str],
    logdir: Path,
    *,
    notify: dict[str, str],
    children: list[Child],
) -> Cluster:
    """A pipeline worker and beat on database ``url``, with the notification settings ``notify``.

    The processes go into ``children`` as they start, so the fixture stops whatever did start.
    """
    worker_env = {**env, "REDIS_URL": url, **notify}
    settings = load_settings(
        profile="sandbox",
        redis_url=url,
        mce_base_url=env["MCE_BASE_URL"],
        lease_seconds=float(TEST_ENV["REFUNDS_LEASE_SECONDS"]),
        http_connect_timeout=float(TEST_ENV["REFUNDS_HTTP_CONNECT_TIMEOUT"]),
        http_read_timeout=float(TEST_ENV["REFUNDS_HTTP_READ_TIMEOUT"]),
        task_soft_time_limit=float(TEST_ENV["REFUNDS_TASK_SOFT_TIME_LIMIT"]),
        task_time_limit=float(TEST_ENV["REFUNDS_TASK_TIME_LIMIT"]),
        **{k.removeprefix("REFUNDS_").lower(): v for k, v in notify.items()},
    )
    ledger = Ledger.from_url(url)
    worker = start_worker(logdir, worker_env, name=f"notify{url.rsplit('/', 1)[1]}", concurrency=4)
    children.append(worker)
    wait_for_worker(worker)
    children.append(start_beat(logdir, worker_env, name=f"notify{url.rsplit('/', 1)[1]}-beat"))
    return Cluster(url, settings, ledger, Producer(settings, ledger=ledger), children)


def _stop(children: list[Child]) -> None:
    for child in children:
        child.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str, hint: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s\n{hint}")


# --- (a) the Celery-task channel ----------------------------------------------------------------


def start_merchant_worker(logdir: Path, broker_url: str, queue: str = merchant_app.QUEUE) -> Child:
    """The merchant app as its own worker process on ``queue``, run from the repository root."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "--workdir",
        str(REPO),
        "-A",
        "tests.integration.merchant_app",
        "worker",
        "-Q",
        queue,
        "--pool",
        "solo",
        "--loglevel",
        "INFO",
        "--hostname",
        f"merchant-{os.getpid()}-{free_port()}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {"MERCHANT_BROKER_URL": broker_url, "PYTHONPATH": pythonpath}
    child = Child("merchant", args, logdir / f"merchant-{queue}.log", env).start()
    wait_for_worker(child)
    return child


@pytest.fixture
def task_channel(
    redis_db: str, env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Cluster, Child]]:
    url = redis_db
    children: list[Child] = []
    try:
        merchant = start_merchant_worker(tmp_path, url)
        children.append(merchant)
        notify = {
            "REFUNDS_NOTIFY_TASK": merchant_app.TASK_NAME,
            "REFUNDS_NOTIFY_QUEUE": merchant_app.QUEUE,
        }
        yield (
            _start(url, env, tmp_path, notify=notify, children=children),
            merchant,
        )
    finally:
        _stop(children)


def test_each_final_refund_is_sent_to_the_merchants_celery_task(
    task_channel: tuple[Cluster, Child], sandbox: SandboxAdmin, prefix: str
) -> None:
    cluster, merchant = task_channel
    refs = [f"{prefix}{i}" for i in range(8)]
    cluster.submit(sandbox, refs)
    records = {r.client_reference: r for r in wait_final(cluster.ledger, refs, 45)}
    assert {r.state for r in records.values()} == {State.COMPLETED}

    received: dict[str, dict[str, Any]] = {}

    def all_received() -> bool:
        for raw in cluster.ledger.redis.lrange(merchant_app.OUTCOMES_KEY, 0, -1):
            message = json.loads(raw)
            received[message["notificationId"]] = message
        return len(received) >= len(refs) and cluster.outbox_drained()

    wait_until(all_received, 30, "every outcome reached the merchant task", cluster.logs())
    time.sleep(1.0)  # anything more would be a stray notification
    all_received()

    assert set(received) == {notification_id(ref) for ref in refs}
    for message in received.values():
        record = records[message["clientReference"]]
        assert message["notificationId"] == notification_id(record.client_reference)
        assert message["eventType"] == "refund.final"
        assert message["state"] == "completed"
        assert message["cryptoRefundId"] == record.crypto_refund_id
        assert message["txnHash"] == record.txn_hash and message["txnHash"].startswith("0x")
        assert message["amount"] == "25.00" and message["currency"] == "USDT"
        assert message["providerStatus"] == 3
    redis_ = cluster.ledger.redis
    assert redis_.zcard(DEAD) == 0 and redis_.hlen(ATTEMPTS) == 0
    assert merchant.alive
    assert f"{merchant_app.TASK_NAME}[" in merchant.log_path.read_text(errors="replace")


# --- (b) the HTTP channel -----------------------------------------------------------------------


@dataclass
class Delivery:
    at: float
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A merchant's callback endpoint: records every request, refuses the first few with 500."""

    def __init__(self, refuse_first: int) -> None:
        self.refuse_first = refuse_first
        self.down = False  # while True, every request is answered 500 (the endpoint is down)
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    refused = receiver.down or len(receiver.deliveries) < receiver.refuse_first
                    status = 500 if refused else 200
                    receiver.deliveries.append(
                        Delivery(time.time(), dict(self.headers.items()), body, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/refund-outcomes"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def accepted(self) -> dict[str, dict[str, Any]]:
        """Accepted bodies by clientReference (the merchant's de-duplicated view)."""
        return {
            json.loads(d.body)["clientReference"]: json.loads(d.body)
            for d in self.snapshot()
            if d.answered == 200
        }


@pytest.fixture
def http_channel(
    redis_db: str, env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Cluster, Receiver]]:
    receiver = Receiver(REFUSE_FIRST)
    receiver.thread.start()
    children: list[Child] = []
    try:
        notify = {"REFUNDS_CALLBACK_URL": receiver.url, "REFUNDS_CALLBACK_SECRET": SECRET}
        yield (
            _start(redis_db, env, tmp_path, notify=notify, children=children),
            receiver,
        )
    finally:
        _stop(children)
        receiver.server.shutdown()
        receiver.server.server_close()


def test_http_callbacks_are_signed_retried_and_cover_every_final_refund(
    http_channel: tuple[Cluster, Receiver], sandbox: SandboxAdmin, prefix: str
) -> None:
    cluster, receiver = http_channel
    refs = [f"{prefix}{i}" for i in range(6)]
    stuck = f"{prefix}stuck"  # not pending at the provider: needs attention, then cancelled
    cluster.submit(sandbox, refs)
    cluster.submit(sandbox, [stuck], flag=False)
    records = {r.client_reference: r for r in wait_final(cluster.ledger, [*refs, stuck], 45)}
    assert {records[r].state for r in refs} == {State.COMPLETED}
    assert records[stuck].state == State.NEEDS_ATTENTION

    # The operator's process reads the same configuration as the workers (one env file).
    cancelled = actions.cancel(
        cluster.ledger, cluster.settings, stuck, actor="ops-bob", reason="merchant refunded by hand"
    ).record
    assert cancelled.state == State.CANCELLED
    every = {*refs, stuck}

    wait_until(
        lambda: set(receiver.accepted()) >= every and cluster.outbox_drained(),
        30,
        "every outcome accepted by the callback endpoint",
        cluster.logs(),
    )
    time.sleep(1.0)  # anything more would be a stray callback
    deliveries = receiver.snapshot()
    accepted = receiver.accepted()

    assert set(accepted) == every
    assert [d.answered for d in deliveries[:REFUSE_FIRST]] == [500] * REFUSE_FIRST
    for d in deliveries:
        body = json.loads(d.body)
        ts = d.headers["X-Refunds-Timestamp"]
        expected = hmac.new(SECRET.encode(), f"{ts}.".encode() + d.body, hashlib.sha256)
        assert hmac.compare_digest(d.headers["X-Refunds-Signature"], expected.hexdigest())
        assert abs(d.at - int(ts)) < 30  # recent: signed when sent, not when queued
        assert d.headers["X-Refunds-Notification-Id"] == body["notificationId"]
        assert body["notificationId"] == notification_id(body["clientReference"])
        assert d.headers["Content-Type"] == "application/json"
    # The refused deliveries came again, with the same notificationId.
    refused = {d.headers["X-Refunds-Notification-Id"] for d in deliveries if d.answered == 500}
    assert refused and refused <= {d["notificationId"] for d in accepted.values()}

    for ref in refs:
        body, record = accepted[ref], records[ref]
        assert body["state"] == "completed"
        assert body["cryptoRefundId"] == record.crypto_refund_id
        assert body["txnHash"] == record.txn_hash
    assert accepted[stuck]["state"] == "cancelled"
    assert accepted[stuck]["cryptoRefundId"] is None and accepted[stuck]["txnHash"] is None
    redis_ = cluster.ledger.redis
    assert redis_.zcard(DEAD) == 0 and redis_.hlen(ATTEMPTS) == 0


# --- (c) the task channel's own queue, and a broker that refuses the publish ----------------------


def _queued(cluster: Cluster, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in a kombu Redis queue (a list the broker LPUSHes), decoded."""
    messages = []
    for raw in cluster.ledger.redis.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        messages.append({"task": message["headers"]["task"], "kwargs": body[1]})
    return messages


@pytest.fixture
def task_channel_default_queue(
    redis_db: str, env: dict[str, str], tmp_path: Path
) -> Iterator[Cluster]:
    """The pipeline told only ``REFUNDS_NOTIFY_TASK``: no queue configured, no merchant worker."""
    children: list[Child] = []
    try:
        notify = {"REFUNDS_NOTIFY_TASK": merchant_app.TASK_NAME}
        yield _start(redis_db, env, tmp_path, notify=notify, children=children)
    finally:
        _stop(children)


def test_task_channel_without_a_queue_lands_in_the_dedicated_queue_our_worker_never_consumes(
    task_channel_default_queue: Cluster, sandbox: SandboxAdmin, prefix: str, tmp_path: Path
) -> None:
    cluster = task_channel_default_queue
    assert cluster.settings.notify_queue == DEFAULT_NOTIFY_QUEUE == "merchant.notifications"
    refs = [f"{prefix}{i}" for i in range(3)]
    cluster.submit(sandbox, refs)
    wait_final(cluster.ledger, refs, 45)
    broker = cluster.ledger.redis
    wait_until(
        lambda: broker.llen(DEFAULT_NOTIFY_QUEUE) >= len(refs) and cluster.outbox_drained(),
        30,
        "every outcome published to merchant.notifications",
        cluster.logs(),
    )
    time.sleep(3.0)  # our worker (and its ticks) had every chance to take them
    queued = _queued(cluster, DEFAULT_NOTIFY_QUEUE)
    assert len(queued) == len(refs)  # none consumed, none published twice
    assert {m["task"] for m in queued} == {merchant_app.TASK_NAME}
    assert {m["kwargs"]["outcome"]["notificationId"] for m in queued} == {
        notification_id(r) for r in refs
    }
    for queue in PIPELINE_QUEUES:  # nothing of the merchant's went to a queue we consume
        assert all(m["task"] != merchant_app.TASK_NAME for m in _queued(cluster, queue))
    worker_log = cluster.children[0].log_path.read_text(errors="replace")
    assert "unregistered task" not in worker_log.lower()
    assert merchant_app.TASK_NAME not in worker_log
    assert broker.zcard(DEAD) == 0 and broker.hlen(ATTEMPTS) == 0

    # A merchant app consuming the dedicated queue gets each outcome once.
    merchant = start_merchant_worker(tmp_path, cluster.url, DEFAULT_NOTIFY_QUEUE)
    cluster.children.append(merchant)
    wait_until(
        lambda: broker.llen(merchant_app.OUTCOMES_KEY) >= len(refs),
        30,
        "the merchant app consumed the dedicated queue",
        merchant.tail(40),
    )
    outcomes = broker.lrange(merchant_app.OUTCOMES_KEY, 0, -1)
    got = [json.loads(raw)["clientReference"] for raw in outcomes]
    assert sorted(got) == sorted(refs)
    assert broker.llen(DEFAULT_NOTIFY_QUEUE) == 0


def test_a_refused_publish_keeps_the_notification_in_the_outbox_until_the_broker_takes_it(
    task_channel_default_queue: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    cluster = task_channel_default_queue
    broker = cluster.ledger.redis
    outbox = Outbox.of(cluster.ledger)
    # The queue's key holds a string: the broker refuses every LPUSH to it (WRONGTYPE).
    broker.set(DEFAULT_NOTIFY_QUEUE, "not a queue")
    ref = f"{prefix}refused"
    member = f"task:{ref}"
    cluster.submit(sandbox, [ref])
    assert wait_final(cluster.ledger, [ref], 45)[0].state == State.COMPLETED
    wait_until(
        lambda: outbox.attempts(member) >= 3,
        40,
        "three refused publishes",
        cluster.logs(),
    )
    assert outbox.due_at(member) is not None  # still in the outbox, due again
    assert "WRONGTYPE" in (outbox.last_error(member) or "")
    assert outbox.dead_count() == 0
    assert broker.get(DEFAULT_NOTIFY_QUEUE) == "not a queue"  # nothing was published

    broker.delete(DEFAULT_NOTIFY_QUEUE)  # the broker takes messages again
    wait_until(
        lambda: cluster.outbox_drained() and broker.llen(DEFAULT_NOTIFY_QUEUE) >= 1,
        30,
        "the notification published once the broker accepted it",
        cluster.logs(),
    )
    time.sleep(1.0)
    queued = _queued(cluster, DEFAULT_NOTIFY_QUEUE)
    assert [m["kwargs"]["outcome"]["clientReference"] for m in queued] == [ref]
    assert outbox.attempts(member) == 0 and outbox.last_error(member) is None


# --- (d) an endpoint down beyond the give-up: a dead letter, listed, counted, replayed ------------

GIVE_UP_AFTER = 3.0  # seconds, instead of the default 24 hours


def refunds_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``refunds`` console script as an operator runs it, against database ``url``."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "REFUNDS_DATABASE_URL")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env |= {"REDIS_URL": url, "REFUNDS_PROFILE": "sandbox", "REFUNDS_LOG_JSON": "false"}
    return subprocess.run(
        [sys.executable, "-m", "refunds.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dead_metric(settings: Settings) -> float:
    text = render_metrics(build_context(settings))[0].decode()
    match = re.search(r"^refunds_notifications_dead (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


@pytest.fixture
def http_channel_short_give_up(
    redis_db: str, env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[Cluster, Receiver]]:
    receiver = Receiver(0)
    receiver.down = True
    receiver.thread.start()
    children: list[Child] = []
    try:
        notify = {
            "REFUNDS_CALLBACK_URL": receiver.url,
            "REFUNDS_CALLBACK_SECRET": SECRET,
            "REFUNDS_NOTIFY_GIVE_UP_AFTER": str(GIVE_UP_AFTER),
            "REFUNDS_NOTIFY_RETRY_BASE_SECONDS": "0.2",
            "REFUNDS_NOTIFY_RETRY_MAX_SECONDS": "1",
        }
        yield (
            _start(redis_db, env, tmp_path, notify=notify, children=children),
            receiver,
        )
    finally:
        _stop(children)
        receiver.server.shutdown()
        receiver.server.server_close()


def test_an_endpoint_down_past_the_give_up_makes_dead_letters_listed_counted_and_replayable(
    http_channel_short_give_up: tuple[Cluster, Receiver], sandbox: SandboxAdmin, prefix: str
) -> None:
    cluster, receiver = http_channel_short_give_up
    outbox = Outbox.of(cluster.ledger)
    refs = [f"{prefix}{i}" for i in range(2)]
    cluster.submit(sandbox, refs)
    wait_final(cluster.ledger, refs, 45)
    started = time.time()
    wait_until(lambda: outbox.dead_count() == len(refs), 40, "both given up", cluster.logs())
    assert cluster.outbox_drained()
    refused = receiver.snapshot()
    assert refused and {d.answered for d in refused} == {500}
    # Retried over the whole window, not given up on the first refusal.
    for ref in refs:
        times = [d.at for d in refused if json.loads(d.body)["clientReference"] == ref]
        assert len(times) >= 3 and times[-1] - times[0] >= GIVE_UP_AFTER - 0.5
    assert time.time() - started < GIVE_UP_AFTER + 30

    listed = refunds_cli(cluster.url, "notifications", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = {d["clientReference"]: d for d in json.loads(listed.stdout)}
    assert set(letters) == set(refs)
    for ref, letter in letters.items():
        assert letter["member"] == f"http:{ref}" and letter["channel"] == "http"
        assert letter["attempts"] >= 3
        assert "HTTP 500" in letter["lastError"]
        assert letter["deadAt"] >= letter["firstFailedAt"]
    table = refunds_cli(cluster.url, "notifications", "dead")
    assert table.returncode == 0 and all(ref in table.stdout for ref in refs), table.stdout
    assert "HTTP 500" in table.stdout

    assert dead_metric(cluster.settings) == len(refs)
    stats = refunds_cli(cluster.url, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["notifications"] == {"pending": 0, "dead": len(refs)}
    stats_text = refunds_cli(cluster.url, "stats")
    assert f"outcome notifications: 0 pending, {len(refs)} dead" in stats_text.stdout

    # Naming something that is not a dead letter is an error; nothing moves.
    wrong = refunds_cli(cluster.url, "notifications", "replay", f"http:{prefix}nope")
    assert wrong.returncode == 1 and "not dead notifications" in wrong.stderr
    assert outbox.dead_count() == len(refs)
    assert refunds_cli(cluster.url, "notifications", "replay").returncode == 2

    receiver.down = False  # the endpoint is back
    before = len(receiver.snapshot())
    replayed = refunds_cli(cluster.url, "notifications", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert f"{len(refs)} replayed, 0 dead left" in replayed.stdout
    wait_until(
        lambda: set(receiver.accepted()) == set(refs) and cluster.outbox_drained(),
        30,
        "the replayed notifications delivered",
        cluster.logs(),
    )
    time.sleep(1.0)
    after = receiver.snapshot()[before:]
    assert sorted(json.loads(d.body)["clientReference"] for d in after) == sorted(refs)
    assert {d.answered for d in after} == {200}
    assert outbox.dead_count() == 0 and dead_metric(cluster.settings) == 0
    assert refunds_cli(cluster.url, "notifications", "dead").stdout.strip() == (
        "no dead notifications"
    )
