"""Cluster-wide pacing of MCE calls (MCE_MAX_RPS) and 429 push-back, with real Redis and workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.settings import load_settings
from devstack.processes import start_beat, start_worker, wait_for_worker
from refunds.models import State
from refunds.producer import Producer
from refunds.store.ledger import Ledger
from refunds.store.pacing import PACE_KEY, Pacer
from tests.conftest import SandboxAdmin, wait_final


def test_pacer_holds_many_callers_to_the_configured_rate(redis_db: str) -> None:
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    client.delete(PACE_KEY)
    rate, seconds = 50.0, 2.0
    granted = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def caller() -> None:
        nonlocal granted
        pacer = Pacer(client, rate, max_wait=0.05)  # one per "process"
        while time.monotonic() < stop:
            wait = pacer.acquire()
            if wait is None:
                with lock:
                    granted += 1
            else:
                time.sleep(min(wait, 0.05))

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    achieved = granted / seconds
    assert rate * 0.9 <= achieved <= rate * 1.05 + 1, achieved


def test_push_back_holds_every_caller(redis_db: str) -> None:
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    client.delete(PACE_KEY)
    a, b = Pacer(client, None, 0.0), Pacer(client, None, 0.0)
    assert a.acquire() is None  # no rate configured: free
    assert a.push_back(0.5) == pytest.approx(0.5, abs=0.05)
    wait = b.acquire()
    assert wait is not None and 0.3 < wait <= 0.5  # the other "worker" is held back too
    time.sleep(0.55)
    assert b.acquire() is None


@pytest.fixture
def paced(redis_db: str, env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Producer]]:
    """Two paced workers and beat on a database of their own, so the session's unpaced worker
    stays out."""
    url = redis_db
    paced_env = {**env, "REDIS_URL": url, "MCE_MAX_RPS": "20"}
    children = [
        start_worker(tmp_path, paced_env, name=f"paced{i}", concurrency=4) for i in range(2)
    ]
    for child in children:
        wait_for_worker(child)
    children.append(start_beat(tmp_path, paced_env))
    settings = load_settings(profile="sandbox", redis_url=url, mce_base_url=env["MCE_BASE_URL"])
    yield url, Producer(settings)
    for child in children:
        child.stop()


def _run(sandbox: SandboxAdmin, producer: Producer, url: str, prefix: str, n: int) -> float:
    refs = [f"{prefix}{i}" for i in range(n)]
    sandbox.flag([f"tx-{r}" for r in refs])
    start = time.monotonic()
    for ref in refs:
        producer.submit(
            {
                "originalTransactionType": 1,
                "originalTransactionId": f"tx-{ref}",
                "clientReference": ref,
            }
        )
    records = wait_final(Ledger.from_url(url), refs, 120)
    elapsed = time.monotonic() - start
    assert {r.state for r in records} == {State.COMPLETED}
    return elapsed


def test_workers_together_stay_under_mce_max_rps_and_see_no_429(
    paced: tuple[str, Producer], sandbox: SandboxAdmin, prefix: str
) -> None:
    url, producer = paced
    # The provider's own limit sits just above ours: pacing alone must avoid every 429.
    sandbox.reset(
        max_rps=24, processing_seconds=0.2, fault_operations=["token", "create", "confirm", "get"]
    )
    elapsed = _run(sandbox, producer, url, prefix, 60)
    counters = sandbox.counters(prefix)
    calls = sum(counters["calls"].values())
    assert counters["faults"]["rate_limited"] == 0
    print(f"paced: {calls} provider calls in {elapsed:.1f}s = {calls / elapsed:.1f}/s (limit 20)")
    assert calls / elapsed <= 20 * 1.05, (calls, elapsed)
    assert calls >= 60 * 3  # create + confirm + at least one get each (and one token)


def test_429_pushes_the_cluster_back_and_refunds_still_finish(
    paced: tuple[str, Producer], sandbox: SandboxAdmin, prefix: str
) -> None:
    url, producer = paced
    sandbox.reset(max_rps=8, retry_after_seconds=1, processing_seconds=0.2)
    _run(sandbox, producer, url, prefix, 30)
    counters = sandbox.counters(prefix)
    limited = counters["faults"]["rate_limited"]
    assert limited > 0
    # Pushed back as a cluster, the workers do not hammer the provider with 429s.
    assert limited < counters["calls"]["create"] + counters["calls"]["get"]
    assert {e["create"] for e in counters["effects"].values()} == {1}
