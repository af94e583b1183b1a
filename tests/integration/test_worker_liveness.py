"""A dispatch lost with its worker is dispatched again in seconds, not after a dispatch lease.

A step message a worker reserved but never started is lost with the worker when it is SIGKILLed:
with late acks it sits in the broker's unacked set for the visibility timeout (an hour), and the
refund's timer waited the whole dispatch lease (doubled for each dispatch that never started).
Each worker now beats about once a second with the step messages it holds (refunds.store.workers,
worker.liveness), and the tick makes the unstarted dispatches of a worker silent for three
seconds due at once.

The end-to-end test makes a worker hold messages it cannot start (its pool processes SIGSTOPped,
so Celery's consumer reserves the messages and hands them to nobody), SIGKILLs it, and times the
next step. The store-level tests pin down what the sweep may and may not touch: a started step is
left to its step lease (it may still be running on a worker that is only slow), a live worker is
left alone, and a lost dispatch does not double the next dispatch lease.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from config.celery import PROVIDER_QUEUE, TIMERS_QUEUE
from devstack.processes import Child, start_beat, start_worker, wait_for_worker
from devstack.sandbox_admin import SandboxAdmin
from devstack.wait import wait_until
from refunds.models import RefundIntent
from refunds.store.keys import record_key
from refunds.store.ledger import Ledger
from refunds.store.timers import redis_now
from tests.chaos.harness import pool_pids

# Leases long enough that waiting for one can never pass for a quick recovery: the dispatch lease
# is 30 s (the lease caps it), while a gone worker is noticed after 3 s of silence.
LEASES = {"REFUNDS_LEASE_SECONDS": "60", "REFUNDS_DISPATCH_LEASE_SECONDS": "30"}
REDISPATCHED_WITHIN = 8.0  # seconds from the kill: 3 s of silence, a tick, a worker's pick-up


def _intent(ref: str) -> RefundIntent:
    return RefundIntent.parse(
        {"originalTransactionType": 1, "originalTransactionId": f"{ref}-tx", "clientReference": ref}
    )


def _fences(client: redis.Redis, refs: list[str]) -> list[tuple[int, int]]:
    """``(disp, start)``: each refund's latest dispatch id and the last one a step started."""
    return [
        (int(d or 0), int(s or 0))
        for d, s in (client.hmget(record_key(r), "disp", "start") for r in refs)
    ]


class Processes:
    """The test's own Celery processes (logs under ``logdir``), stopped at its end."""

    def __init__(self, logdir: Path, env: dict[str, str]) -> None:
        self.logdir = logdir
        self.env = env
        self.children: list[Child] = []

    def worker(self, name: str, concurrency: int, queues: str) -> Child:
        child = start_worker(
            self.logdir, self.env, name=name, concurrency=concurrency, queues=queues
        )
        self.children.append(child)
        wait_for_worker(child)
        return child

    def beat(self) -> None:
        self.children.append(start_beat(self.logdir, self.env))


@pytest.fixture
def processes(tmp_path: Path, env: dict[str, str], redis_db: str) -> Iterator[Processes]:
    started = Processes(tmp_path, {**env, **LEASES, "REDIS_URL": redis_db})
    yield started
    for child in started.children:
        child.stop()


def test_dispatches_a_killed_worker_reserved_but_never_started_run_again_within_seconds(
    redis_db: str, sandbox: SandboxAdmin, prefix: str, processes: Processes
) -> None:
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    ledger = Ledger(client)
    refs = [f"{prefix}{i}" for i in range(2)]
    sandbox.flag([f"{r}-tx" for r in refs], outcome="completed")

    # The victim takes step messages only, and cannot start them: Celery's consumer (the main
    # process) reserves up to its prefetch (2) and hands them to no running pool process.
    victim = processes.worker("victim", 2, PROVIDER_QUEUE)
    assert victim.proc is not None
    stopped = pool_pids(victim.proc.pid)
    assert len(stopped) == 2
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    ticker = processes.worker("ticker", 1, TIMERS_QUEUE)
    processes.beat()

    ledger.submit_many([_intent(r) for r in refs], due_in=0.0)
    wait_until(
        lambda: (
            client.llen(PROVIDER_QUEUE) == 0
            and all(d > 0 and s < d for d, s in _fences(client, refs))
        ),
        30,
        interval=0.1,
        what="both creates dispatched and reserved by the victim, none started",
    )
    time.sleep(1.5)  # the victim has held them for a while (as a prefetching worker does)
    at_kill = _fences(client, refs)
    assert all(s < d for d, s in at_kill), f"a reserved step started: {at_kill}"

    processes.worker("rescuer", 2, PROVIDER_QUEUE)
    victim.kill()  # the whole group: main process and its stopped pool, no ack, no cleanup
    killed = time.monotonic()

    def started_again() -> bool:
        return all(s > s0 for (_, s), (_, s0) in zip(_fences(client, refs), at_kill, strict=True))

    wait_until(
        started_again,
        REDISPATCHED_WITHIN,
        interval=0.05,
        what=f"a step started again for both refunds within {REDISPATCHED_WITHIN:g} s of the kill",
    )
    elapsed = time.monotonic() - killed
    print(f"\nredispatched and started {elapsed:.2f} s after the kill")

    wait_until(
        lambda: all(r.state == "completed" for r in ledger.get_many(refs)),
        30,
        interval=0.2,
        what="both refunds completed",
    )
    effects = sandbox.counters(prefix)["effects"]
    assert {r: effects[r]["create"] for r in refs} == dict.fromkeys(refs, 1)
    ticker_log = ticker.log_path.read_text(errors="replace")
    assert "stopped beating" in ticker_log, "the tick names the gone worker"


# --- the sweep, on the store alone -----------------------------------------------------------


@pytest.fixture
def ledger_db(redis_db: str) -> Ledger:
    return Ledger(redis.Redis.from_url(redis_db, decode_responses=True))


def _dispatched(ledger: Ledger, refs: list[str], lease: float) -> dict[str, int]:
    ledger.submit_many([_intent(r) for r in refs], due_in=0.0)
    claimed = ledger.claim_dispatch(lease, 100)
    return {ref: fence for ref, _, fence in claimed}


def test_the_sweep_redispatches_only_unstarted_dispatches_of_a_silent_worker(
    ledger_db: Ledger, prefix: str
) -> None:
    ledger = ledger_db
    unstarted, running = f"{prefix}unstarted", f"{prefix}running"
    fences = _dispatched(ledger, [unstarted, running], lease=30.0)
    lock, _ = ledger.try_lock(running, 6.0, start=True, fence=fences[running])
    assert lock is not None and lock.began
    running_due = ledger.due_at(running)
    ledger.workers.beat("w1:1", fences)

    assert ledger.workers.sweep(stale_after=60.0) == []  # it beat just now: alive
    assert ledger.due_at(unstarted) is not None
    assert ledger.due_at(unstarted) > redis_now(ledger.redis) + 20  # still leased

    gone = ledger.workers.sweep(stale_after=0.0)  # now it counts as silent
    assert [(g.name, g.redispatched) for g in gone] == [("w1:1", (unstarted,))]
    assert ledger.due_at(unstarted) <= redis_now(ledger.redis)  # due now
    assert ledger.due_at(running) == running_due  # a started step is its lease's business
    assert ledger.workers.live() == {}
    assert ledger.workers.sweep(stale_after=0.0) == []  # swept once


def test_a_dispatch_lost_with_its_worker_does_not_double_the_next_lease(
    ledger_db: Ledger, prefix: str
) -> None:
    ledger = ledger_db
    ref = f"{prefix}lost"
    fence = _dispatched(ledger, [ref], lease=30.0)[ref]
    ledger.workers.beat("w2:1", {ref: fence})
    ledger.workers.sweep(stale_after=0.0)

    again = ledger.claim_dispatch(30.0, 100)
    assert [(r, f) for r, _, f in again] == [(ref, fence + 1)]
    due = ledger.due_at(ref)
    assert due is not None
    assert due - redis_now(ledger.redis) <= 30.5  # the base lease, not 60 s


def test_a_live_worker_swept_by_mistake_is_seen_again_at_its_next_beat(
    ledger_db: Ledger, prefix: str
) -> None:
    ledger = ledger_db
    ref = f"{prefix}slow"
    fence = _dispatched(ledger, [ref], lease=30.0)[ref]
    ledger.workers.beat("w3:1", {ref: fence})
    ledger.workers.sweep(stale_after=0.0)
    # Its old message now carries a stale fence once the tick dispatches again; the worker itself
    # reappears with its next beat.
    ledger.workers.beat("w3:1", {})
    assert list(ledger.workers.live()) == ["w3:1"]
