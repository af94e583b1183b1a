"""A provider that stalls or lies in its envelope, met by a real worker over HTTP.

One worker (-c 2), one beat, a sandbox of the module's own and a database of the private Redis,
with the give-up window short (``GIVE_UP_AFTER``) so that "given up on in time" fits a test:

- a Create whose answer trickles a byte at a time ends in a typed timeout within one call
  deadline (connect + read timeout), not at Celery's soft time limit; ``lastError`` says so while
  it lasts, and the refund goes to ``needs_attention`` once the give-up window has passed;
- an HTTP 200 whose envelope carries a business code stops the refund after one Create, with the
  provider's code, ``msg`` and ``logId`` in ``lastError``; a 200 with code 500 is retried, and
  ``lastError`` carries that code and ``msg``;
- the call counters count every request the sandbox received, whatever became of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from devstack.processes import Child, start_beat, start_sandbox, start_worker, wait_for_worker
from devstack.sandbox_admin import SandboxAdmin
from refunds.models import RefundRecord, State
from refunds.ops.counters import Stats
from refunds.producer import Producer
from refunds.store.ledger import Ledger
from tests.conftest import TEST_ENV, RedisDatabases, wait_until

GIVE_UP_AFTER = 6.0
#: One call's whole budget: REFUNDS_HTTP_CONNECT_TIMEOUT + REFUNDS_HTTP_READ_TIMEOUT.
DEADLINE = float(TEST_ENV["REFUNDS_HTTP_CONNECT_TIMEOUT"]) + float(
    TEST_ENV["REFUNDS_HTTP_READ_TIMEOUT"]
)
SOFT_LIMIT = float(TEST_ENV["REFUNDS_TASK_SOFT_TIME_LIMIT"])
RETRY_MAX = float(TEST_ENV["REFUNDS_RETRY_MAX_SECONDS"])
#: Dispatch, the timer tick and the watchdog's wake-up, on a busy machine.
SLACK = 2.0


@dataclass
class Cluster:
    ledger: Ledger
    producer: Producer
    sandbox: SandboxAdmin
    stats: Stats
    worker: Child

    def submit(self, ref: str) -> None:
        self.sandbox.flag([f"tx-{ref}"], amount="10.00", currency="USDT")
        self.producer.submit(
            {
                "originalTransactionType": 1,
                "originalTransactionId": f"tx-{ref}",
                "clientReference": ref,
            }
        )

    def record(self, ref: str) -> RefundRecord:
        return self.ledger.get(ref)

    def calls(self, operation: str) -> int:
        """Requests counted by the pipeline for ``operation`` (every outcome)."""
        self.stats.flush()
        return sum(n for (op, _), n in self.stats.calls().items() if op == operation)

    def received(self, operation: str) -> int:
        """Requests the sandbox received for ``operation`` since its last reset."""
        return int(self.sandbox.calls()[operation])


@pytest.fixture(scope="module")
def cluster(
    redis_dbs: RedisDatabases, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    logdir: Path = tmp_path_factory.mktemp("provider-answers")
    url = redis_dbs.take()
    children: list[Child] = []
    try:
        sandbox_child, sandbox_url = start_sandbox(logdir)
        children.append(sandbox_child)
        cluster_env = {
            **env,
            "REDIS_URL": url,
            "MCE_BASE_URL": sandbox_url,
            "REFUNDS_GIVE_UP_AFTER": str(GIVE_UP_AFTER),
        }
        worker = start_worker(logdir, cluster_env, name="answers", concurrency=2)
        children.append(worker)
        wait_for_worker(worker)
        children.append(start_beat(logdir, cluster_env, name="answers-beat"))
        settings = load_settings(
            profile="sandbox",
            redis_url=url,
            mce_base_url=sandbox_url,
            lease_seconds=float(TEST_ENV["REFUNDS_LEASE_SECONDS"]),
            task_soft_time_limit=SOFT_LIMIT,
            task_time_limit=float(TEST_ENV["REFUNDS_TASK_TIME_LIMIT"]),
            http_connect_timeout=float(TEST_ENV["REFUNDS_HTTP_CONNECT_TIMEOUT"]),
            http_read_timeout=float(TEST_ENV["REFUNDS_HTTP_READ_TIMEOUT"]),
        )
        ledger = Ledger.from_url(url)
        sandbox = SandboxAdmin(sandbox_url, defaults={"token_ttl_seconds": 3600})
        stats = Stats(ledger.redis, flush_seconds=0)
        yield Cluster(ledger, Producer(settings, ledger=ledger), sandbox, stats, worker)
    finally:
        for child in reversed(children):
            child.stop()
        redis_dbs.give_back(url)


def _wait_for(cluster: Cluster, ref: str, what: str, test: Any, timeout: float) -> RefundRecord:
    found: list[RefundRecord] = []

    def check() -> bool:
        found[:] = [cluster.record(ref)]
        return bool(test(found[0]))

    wait_until(check, timeout, interval=0.05, what=what)
    return found[0]


def test_a_trickled_create_times_out_within_one_deadline_and_is_given_up_on(
    cluster: Cluster, prefix: str
) -> None:
    sb = cluster.sandbox
    sb.reset(trickle_bytes=1, trickle_interval_ms=100, fault_operations=["create"])
    calls_before = cluster.calls("create")
    ref = f"{prefix}trickled"
    cluster.submit(ref)
    wait_until(lambda: cluster.received("create") >= 1, 10, interval=0.02, what="the first Create")
    first_sent = time.monotonic()

    record = _wait_for(
        cluster, ref, "lastError set by the first timeout", lambda r: r.last_error, DEADLINE + SLACK
    )
    typed_after = time.monotonic() - first_sent
    error = record.last_error or {}
    assert error["type"] == "MceTimeoutError", error
    assert error["operation"] == "create"
    assert typed_after < SOFT_LIMIT
    assert str(record.state) != State.NEEDS_ATTENTION

    # Given up on once the streak of failures has lasted GIVE_UP_AFTER: the next failure after
    # that stops it (one more backoff and one more call deadline at most).
    record = _wait_for(
        cluster,
        ref,
        "needs_attention after the give-up window",
        lambda r: r.state == State.NEEDS_ATTENTION,
        GIVE_UP_AFTER + RETRY_MAX + DEADLINE + SLACK,
    )
    stopped_after = time.monotonic() - first_sent
    assert (record.last_error or {})["type"] == "MceTimeoutError"
    assert stopped_after <= GIVE_UP_AFTER + RETRY_MAX + 2 * DEADLINE + SLACK
    time.sleep(1.5)  # a request in flight arrives; the worker writes its counts (once a second)
    received = cluster.received("create")
    assert received >= 2  # retried meanwhile, never interrupted by the soft time limit
    assert cluster.calls("create") - calls_before == received
    assert "SoftTimeLimitExceeded" not in cluster.worker.log_path.read_text(errors="replace")
    print(
        f"\ntrickled Create: typed timeout {typed_after:.2f}s after the first Create "
        f"(deadline {DEADLINE:g}s, soft limit {SOFT_LIMIT:g}s); needs_attention after "
        f"{stopped_after:.1f}s (give-up {GIVE_UP_AFTER:g}s); {received} Creates sent and counted"
    )


def test_a_business_code_in_a_200_envelope_stops_the_refund_after_one_create(
    cluster: Cluster, prefix: str
) -> None:
    sb = cluster.sandbox
    sb.reset(
        envelope_error_code="CRYPTO_REFUND_NOT_PENDING",
        envelope_error_msg="no pending refund for this transaction",
        fault_operations=["create"],
    )
    calls_before = cluster.calls("create")
    ref = f"{prefix}env-business"
    cluster.submit(ref)
    record = _wait_for(
        cluster, ref, "needs_attention", lambda r: r.state == State.NEEDS_ATTENTION, 15
    )
    time.sleep(1.5)  # a second Create, if one were coming, is sent by now; counts are written
    assert cluster.received("create") == 1
    assert cluster.calls("create") - calls_before == 1
    error = record.last_error or {}
    assert error["code"] == "CRYPTO_REFUND_NOT_PENDING"
    assert error["msg"] == "no pending refund for this transaction"
    assert error["logId"]
    assert error["status"] == 200


def test_a_500_code_in_a_200_envelope_is_retried_with_the_providers_code_and_msg(
    cluster: Cluster, prefix: str
) -> None:
    sb = cluster.sandbox
    sb.reset(envelope_error_code=500, envelope_error_msg="ledger busy", fault_operations=["create"])
    calls_before = cluster.calls("create")
    ref = f"{prefix}env-500"
    cluster.submit(ref)
    wait_until(lambda: cluster.received("create") >= 3, 15, interval=0.05, what="three Creates")
    record = cluster.record(ref)
    error = record.last_error or {}
    assert str(record.state) != State.NEEDS_ATTENTION
    assert (error["type"], error["code"], error["msg"]) == ("MceServerError", "500", "ledger busy")
    assert error["logId"]

    sb.configure(envelope_error_code=None)
    record = _wait_for(cluster, ref, "completed", lambda r: r.state == State.COMPLETED, 20)
    time.sleep(1.5)  # the worker writes its counts once a second
    assert cluster.calls("create") - calls_before == cluster.received("create")


def test_a_trickled_get_times_out_within_one_deadline_and_is_given_up_on(
    cluster: Cluster, prefix: str
) -> None:
    sb = cluster.sandbox
    sb.reset(trickle_bytes=1, trickle_interval_ms=100, fault_operations=["get"])
    calls_before = cluster.calls("get")
    ref = f"{prefix}trickled-get"
    cluster.submit(ref)  # Create and Confirm answer at once; every Get trickles
    wait_until(lambda: cluster.received("get") >= 1, 10, interval=0.02, what="the first Get")
    first_sent = time.monotonic()
    record = _wait_for(
        cluster, ref, "lastError set by the first timeout", lambda r: r.last_error, DEADLINE + SLACK
    )
    error = record.last_error or {}
    assert (error["type"], error["operation"]) == ("MceTimeoutError", "get")
    assert time.monotonic() - first_sent < SOFT_LIMIT
    _wait_for(
        cluster,
        ref,
        "needs_attention after the give-up window",
        lambda r: r.state == State.NEEDS_ATTENTION,
        GIVE_UP_AFTER + RETRY_MAX + DEADLINE + SLACK,
    )
    time.sleep(1.5)  # a request in flight arrives; the worker writes its counts (once a second)
    assert cluster.calls("get") - calls_before == cluster.received("get") >= 2
    assert sb.effects(ref) == {"create": 1, "confirm": 1}
