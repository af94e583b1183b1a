"""``refunds stats``: counts, the oldest refund not final, timers and provider counters.

Two views. Against a Redis of its own (no worker, so nothing moves unless the test moves it): the
oldest non-final refund is the right one as refunds leave flight, and finding it reads no record
(Redis' own command statistics prove which commands ran). Against the session's stack after a real
run: the JSON agrees with the ledger, with the shared counters and with a brute-force reading of
every record.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from devstack.processes import Child, start_redis
from devstack.wait import wait_until
from refunds.models import FINAL_STATES, RefundIntent, State
from refunds.ops.counters import Stats
from refunds.producer import Producer
from refunds.store.ledger import ALL, Ledger, record_key, state_key
from tests.conftest import SandboxAdmin, Stack, wait_final

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "refunds.cli"]
FINAL_NAMES = {str(s) for s in FINAL_STATES}
RECORD_PREFIX = record_key("")


def cli_env(url: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "REFUNDS_DATABASE_URL")
    return {
        **{k: os.environ[k] for k in keep if k in os.environ},
        "REDIS_URL": url,
        "REFUNDS_PROFILE": "sandbox",
    }


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env=cli_env(url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stats_json(url: str) -> dict[str, Any]:
    result = run_cli(url, "stats", "--json")
    assert result.returncode == 0, result.stderr
    return cast(dict[str, Any], json.loads(result.stdout))


def intent(ref: str) -> RefundIntent:
    return RefundIntent.parse(
        {
            "originalTransactionType": 1,
            "originalTransactionId": f"tx-{ref}",
            "clientReference": ref,
        }
    )


# --- a Redis of its own: which refund is oldest, and what it costs to find out ------------------


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child: Child
    child, url = start_redis(tmp_path_factory.mktemp("stats-redis"), appendonly=False)
    yield url
    child.stop()


@contextlib.contextmanager
def monitored(url: str) -> Iterator[list[list[str]]]:
    """Every command the server runs meanwhile, as its words (MONITOR, on its own connection).

    No socket timeout (redis-py drops a connection that times out): the stop is a PING, which
    the monitor sees like any other command, so the reading thread wakes and ends.
    """
    seen: list[list[str]] = []
    stop = threading.Event()
    ready = threading.Event()
    client = redis.Redis.from_url(url, decode_responses=True)

    def watch() -> None:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            ready.set()
            while not stop.is_set():
                seen.append(str(monitor.next_command()["command"]).split())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert ready.wait(5)
    time.sleep(0.2)  # MONITOR has reached the server
    try:
        yield seen
    finally:
        time.sleep(0.3)  # the last commands reach the monitor
        stop.set()
        redis.Redis.from_url(url).ping()
        thread.join(5)


def backdated(
    monkeypatch: pytest.MonkeyPatch, seconds: float
) -> contextlib.AbstractContextManager[None]:
    """Within it, the ledger stamps what it writes ``seconds`` in the past (a known age)."""

    @contextlib.contextmanager
    def scope() -> Iterator[None]:
        with monkeypatch.context() as patch:
            real = time.time
            # The ledger stamps times where it writes: intake (created) and records (updated,
            # history lines).
            for method in (Ledger.submit, Ledger.write):
                patch.setattr(sys.modules[method.__module__], "now", lambda: real() - seconds)
            yield

    return scope()


# Slack for an age or lag measured by a CLI process a moment after the test set it up.
CLI_SLACK = 10.0


def test_stats_names_the_oldest_refund_not_final_as_refunds_leave_flight(
    own_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.from_url(own_redis)
    ledger.redis.flushdb()
    for ref, age in (("a", 400), ("b", 300), ("c", 200), ("d", 100)):  # created in this order
        with backdated(monkeypatch, age):
            ledger.submit(intent(ref), due_in=600)
    ledger.set_due("d", time.time() - 42)  # the one overdue timer, 42 s late
    ledger.transition(ledger.get("a"), State.CANCELLED, "test", actor="test")
    ledger.transition(ledger.get("c"), State.NEEDS_ATTENTION, "test", actor="test")

    stats = stats_json(own_redis)
    assert stats["counts"]["received"] == 2
    assert stats["counts"]["needs_attention"] == 1
    assert stats["counts"]["cancelled"] == 1
    assert (stats["total"], stats["nonFinal"]) == (4, 3)
    oldest = stats["oldestNonFinal"]
    assert (oldest["clientReference"], oldest["state"]) == ("b", "received")
    assert oldest["createdAt"] == ledger.get("b").to_public()["createdAt"]
    assert 300 <= oldest["ageSeconds"] <= 300 + CLI_SLACK
    assert 42 <= stats["timers"]["lagSeconds"] <= 42 + CLI_SLACK
    by_state = stats["oldestByState"]
    assert set(by_state) == {"received", "needs_attention"}
    assert by_state["received"]["clientReference"] == "b"
    assert by_state["needs_attention"]["clientReference"] == "c"
    assert stats["timers"]["count"] == ledger.timer_count()

    # b and d leave flight: the one held for a human is now the oldest, and the table says so.
    for ref in ("b", "d"):
        ledger.transition(ledger.get(ref), State.CANCELLED, "test", actor="test")
    oldest = stats_json(own_redis)["oldestNonFinal"]
    assert (oldest["clientReference"], oldest["state"]) == ("c", "needs_attention")
    human = run_cli(own_redis, "stats")
    assert human.returncode == 0, human.stderr
    assert "oldest not final: c (needs_attention)" in human.stdout
    assert "1 need a human" in human.stdout

    ledger.transition(ledger.get("c"), State.CANCELLED, "test", actor="test")
    stats = stats_json(own_redis)
    assert stats["oldestNonFinal"] is None
    assert stats["oldestByState"] == {}
    assert "nothing in flight" in run_cli(own_redis, "stats").stdout


def test_stats_reads_no_record_and_costs_one_zscore_per_refund_in_flight(own_redis: str) -> None:
    ledger = Ledger.from_url(own_redis)
    ledger.redis.flushdb()
    ledger.submit_many([intent(f"done-{i}") for i in range(300)], due_in=60)
    for record in ledger.get_many(ledger.references()):
        ledger.transition(record, State.CANCELLED, "test", actor="test")
    ledger.submit_many([intent(f"live-{i}") for i in range(5)], due_in=60)

    with monitored(own_redis) as commands:
        stats = stats_json(own_redis)

    assert stats["nonFinal"] == 5 and stats["total"] == 305
    assert stats["oldestNonFinal"]["clientReference"] == "live-0"
    assert commands  # the monitor did see the command's work
    names = [c[0].upper() for c in commands]
    assert names.count("ZSCORE") == 5  # one per refund in flight, none for the 300 final ones
    assert not {"SCAN", "KEYS", "SMEMBERS"} & set(names)
    touched = [c for c in commands if len(c) > 1 and c[1].startswith(RECORD_PREFIX)]
    assert touched == []  # no record is read
    walked = [c for c in commands if len(c) > 1 and c[1] == ALL and c[0].upper() != "ZSCORE"]
    assert walked == []  # the creation index is only asked for single scores
    scanned = {c[1] for c in commands if c[0].upper() == "SSCAN"}
    assert scanned == {state_key(s) for s in State if s not in FINAL_STATES}


# --- after a real run on the session's stack --------------------------------------------------


@pytest.mark.usefixtures("stack")
def test_stats_json_after_a_run_agrees_with_ledger_counters_and_records(
    sandbox: SandboxAdmin,
    producer: Producer,
    ledger: Ledger,
    redis_url: str,
    prefix: str,
) -> None:
    counters = Stats(ledger.redis)
    errors_before = counters.errors_since(3600)
    calls_before = counters.calls()
    flagged = [f"{prefix}ok{i}" for i in range(4)]
    unflagged = [f"{prefix}np{i}" for i in range(3)]  # no pending refund at the provider
    sandbox.flag([f"tx-{r}" for r in flagged])
    for ref in flagged + unflagged:
        producer.submit(
            {
                "originalTransactionType": 1,
                "originalTransactionId": f"tx-{ref}",
                "clientReference": ref,
            }
        )
    records = {r.client_reference: r for r in wait_final(ledger, flagged + unflagged, 60)}
    assert {records[r].state for r in flagged} == {State.COMPLETED}
    assert {records[r].state for r in unflagged} == {State.NEEDS_ATTENTION}

    # The workers write their provider-call counts at most once a second (store/counters.py):
    # wait for the last refund's calls to be written, then read the CLI's view.
    def written() -> bool:
        calls = counters.calls()
        return all(
            calls.get(pair, 0) - calls_before.get(pair, 0) >= n
            for pair, n in (
                (("create", "422"), 3),
                (("create", "200"), 4),
                (("confirm", "200"), 4),
                (("get", "200"), 4),
            )
        )

    deadline = time.monotonic() + 10
    while not written() and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = stats_json(redis_url)

    assert stats["counts"] == ledger.counts()  # nothing moves: every refund is final or held
    assert stats["counts"]["needs_attention"] >= 3
    assert stats["total"] == sum(stats["counts"].values())
    codes = stats["errors"]["codes"]
    assert stats["errors"]["windowSeconds"] == 3600
    assert codes["CRYPTO_REFUND_NOT_PENDING"] - errors_before["CRYPTO_REFUND_NOT_PENDING"] == 3

    def delta(operation: str, outcome: str) -> int:
        now = stats["providerCalls"].get(operation, {}).get(outcome, 0)
        return int(now) - calls_before.get((operation, outcome), 0)

    assert delta("create", "422") == 3
    assert delta("create", "200") >= 4
    assert delta("confirm", "200") >= 4
    assert delta("get", "200") >= 4
    assert stats["tokenFetches"] == counters.token_fetches() >= 1
    assert stats["timers"]["count"] == ledger.timer_count()
    # Measured a moment before this reading: equal, unless a timer is overdue (then a bit less).
    assert (
        ledger.timer_lag() - CLI_SLACK <= stats["timers"]["lagSeconds"] <= ledger.timer_lag() + 0.01
    )

    # The oldest non-final refund, checked against every record read the expensive way.
    listing = run_cli(redis_url, "list", "--limit", "0", "--json")
    assert listing.returncode == 0, listing.stderr
    in_flight = [r for r in json.loads(listing.stdout) if r["state"] not in FINAL_NAMES]
    first = min(r["createdAt"] for r in in_flight)  # ISO strings in UTC sort as times
    oldest = stats["oldestNonFinal"]
    assert oldest["createdAt"] == first
    same_time = {r["clientReference"]: r["state"] for r in in_flight if r["createdAt"] == first}
    assert same_time.get(oldest["clientReference"]) == oldest["state"]
    age_now = time.time() - datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()
    assert age_now - CLI_SLACK <= oldest["ageSeconds"] <= age_now + 0.01
    held = stats["oldestByState"]["needs_attention"]
    assert held["state"] == "needs_attention"
    assert held["createdAt"] <= records[unflagged[0]].to_public()["createdAt"]

    human = run_cli(redis_url, "stats")
    assert human.returncode == 0, human.stderr
    for text in (
        "needs_attention",
        "CRYPTO_REFUND_NOT_PENDING",
        "oldest not final",
        "provider calls",
        "token fetches",
    ):
        assert text in human.stdout


def test_health_probe_needs_redis_and_recent_ticks(
    stack: Stack, env: dict[str, str], redis_url: str
) -> None:
    probe = [sys.executable, "-m", "refunds.ops.health"]
    # An unacknowledged contradiction turns the probe red (a test file before this one in the
    # session's database may have left one on purpose): acknowledged here, as an operator would.
    shared = Ledger.from_url(redis_url)
    for ref in shared.conflicted():
        shared.unflag_conflict(ref)
    # The session's beat ticks every 0.25 s; when this test runs first, its first tick may not be
    # written yet.
    wait_until(lambda: shared.since_last_tick() is not None, 30, what="the session's first tick")
    ok = subprocess.run(
        [*probe, "--tick-within", "10"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr  # the session's beat and worker tick every 0.25 s
    quiet_db = {**os.environ, **env, "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/11"}
    never = subprocess.run(
        [*probe, "--tick-within", "10"],
        env=quiet_db,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert never.returncode == 1 and "last scheduler tick never" in never.stderr
    plain = subprocess.run(
        probe, env=quiet_db, capture_output=True, text=True, timeout=30, check=False
    )
    assert plain.returncode == 0  # Redis answers; no tick requirement asked
    down = subprocess.run(
        probe,
        env={**quiet_db, "REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert down.returncode == 1 and down.stderr.startswith("unhealthy:")
