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

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings, load_settings
from devstack.processes import Child, free_port, start_beat, start_worker, wait_for_worker
from refunds import actions
from refunds.models import State
from refunds.notify import ATTEMPTS, DEAD, notification_id
from refunds.producer import Producer
from refunds.store.ledger import OUTBOX, Ledger
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


def start_merchant_worker(logdir: Path, broker_url: str) -> Child:
    """The merchant app as its own worker process, run from the repository root."""
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
        merchant_app.QUEUE,
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
    child = Child("merchant", args, logdir / "merchant.log", env).start()
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
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    status = 500 if len(receiver.deliveries) < receiver.refuse_first else 200
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
