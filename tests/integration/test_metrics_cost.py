"""``/metrics`` costs the same whatever the number of refunds in flight, and can need a token.

The oldest refund in flight comes from the in-flight index (``rp:inflight``), which the intake
and transition scripts keep; a scrape runs the same Redis commands for 5 refunds in flight as for
300, and never scans a state set or reads a record. Against a Redis of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from config.settings import load_settings
from devstack.processes import Child, start_redis
from refunds.context import build_context
from refunds.models import State
from refunds.ops.metrics import render_metrics
from refunds.steps.operations import _CONFIRM, _CREATE
from refunds.store.inflight import IN_FLIGHT_STATES, InFlight
from refunds.store.keys import (
    CALLS,
    CONFLICT_KINDS,
    IN_FLIGHT,
    KYT_ALERTS,
    KYT_MATCHES,
    LATENCY,
    RECORD_PREFIX,
    WEBHOOKS,
)
from refunds.store.ledger import Ledger
from tests.integration.test_stats import REPO, backdated, cli_env, intent, monitored


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child: Child
    child, url = start_redis(tmp_path_factory.mktemp("metrics-redis"), appendonly=False)
    yield url
    child.stop()


def scrape(url: str) -> dict[str, float]:
    ctx = build_context(load_settings(profile="sandbox", redis_url=url))
    body, _ = render_metrics(ctx)
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_the_index_follows_a_refund_in_and_out_of_flight(
    own_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.from_url(own_redis)
    ledger.redis.flushdb()
    index = InFlight(ledger.redis)
    with backdated(monkeypatch, 600):
        ledger.submit(intent("a"), due_in=60)
    ledger.submit(intent("b"), due_in=60)
    created = ledger.get("a").created_at
    assert index.oldest() == ("a", pytest.approx(created, abs=1e-6))
    assert index.count() == 2

    stopped = ledger.transition(ledger.get("a"), State.NEEDS_ATTENTION, "test", actor="test")
    oldest = index.oldest()
    assert oldest is not None
    assert oldest[0] == "b"
    assert 0 <= scrape(own_redis)["refunds_oldest_in_flight_age_seconds"] < 60

    # An operator's retry puts it back in flight, with its own creation time.
    ledger.transition(stopped, State.RECEIVED, "retry", actor="test")
    assert index.oldest() == ("a", pytest.approx(created, abs=1e-6))
    assert 600 <= scrape(own_redis)["refunds_oldest_in_flight_age_seconds"] < 660

    for ref in ("a", "b"):
        ledger.transition(ledger.get(ref), State.CANCELLED, "test", actor="test")
    assert index.oldest() is None
    assert index.count() == 0
    assert scrape(own_redis)["refunds_oldest_in_flight_age_seconds"] == 0.0


def test_a_steps_begun_attempt_never_leaves_flight() -> None:
    """The lock script moves a refund between in-flight states only, so it need not touch the
    index; a Begin from or to a held or final state would have to."""
    for begin in (_CREATE, _CONFIRM):
        assert begin.working in IN_FLIGHT_STATES
        assert set(begin.from_states) <= set(IN_FLIGHT_STATES)


def test_a_scrape_runs_the_same_commands_for_5_or_300_refunds_in_flight(own_redis: str) -> None:
    ledger = Ledger.from_url(own_redis)
    seen: dict[int, list[str]] = {}
    for n in (5, 300):
        ledger.redis.flushdb()
        ledger.submit_many([intent(f"live-{i}") for i in range(n)], due_in=60)
        scrape(own_redis)  # scripts loaded, connections open
        with monitored(own_redis) as commands:
            values = scrape(own_redis)
        assert values["refunds_in_flight"] == n
        assert values['refunds_by_state{state="received"}'] == n
        words = [[w.strip('"') for w in c] for c in commands]
        names = [c[0].upper() for c in words]
        assert not {"SSCAN", "SCAN", "KEYS", "SMEMBERS", "ZSCORE", "ZRANGEBYSCORE"} & set(names)
        keys = [c[1] for c in words if len(c) > 1]
        assert not [k for k in keys if k.startswith(RECORD_PREFIX)]  # no record is read
        # Whole hashes only of the counters (bounded by operations, outcomes, kinds, KYT rules).
        assert {c[1] for c in words if c[0].upper() == "HGETALL"} <= {
            CALLS,
            LATENCY,
            WEBHOOKS,
            CONFLICT_KINDS,
            KYT_MATCHES,
            KYT_ALERTS,
        }
        seen[n] = names
    assert seen[5] == seen[300]


def test_refunds_in_flight_before_the_index_are_counted_then_indexed(
    own_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.from_url(own_redis)
    ledger.redis.flushdb()
    with backdated(monkeypatch, 7200):
        ledger.submit_many([intent(f"old-{i}") for i in range(3)], due_in=60)
    ledger.submit(intent("done"), due_in=60)
    ledger.transition(ledger.get("done"), State.CANCELLED, "test", actor="test")
    ledger.submit(intent("held"), due_in=60)
    ledger.transition(ledger.get("held"), State.NEEDS_ATTENTION, "test", actor="test")
    ledger.redis.delete(IN_FLIGHT)  # as a release before the index left them
    values = scrape(own_redis)
    assert values["refunds_in_flight_unindexed"] == 3
    assert values["refunds_oldest_in_flight_age_seconds"] == 0.0  # what the index misses
    ledger.redis.zadd(IN_FLIGHT, {"done": 1.0})  # and a stale entry, never from the scripts

    run = subprocess.run(
        [sys.executable, "-m", "refunds.cli", "index-inflight", "--json"],
        env=cli_env(own_redis),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"added": 3, "removed": 1}
    values = scrape(own_redis)
    assert values["refunds_in_flight_unindexed"] == 0
    assert values["refunds_in_flight"] == 3
    assert 7200 <= values["refunds_oldest_in_flight_age_seconds"] < 7260
    assert InFlight(ledger.redis).rebuild() == (0, 0)  # a rerun changes nothing
