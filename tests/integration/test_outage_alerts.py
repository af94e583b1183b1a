"""The age alert and the credentials incident as an operator sees them (issue 11): ``refunds
stats``, ``/metrics`` and the health probe, against a Redis of its own (nothing moves unless the
test moves it)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from config.settings import load_settings
from devstack.processes import Child, start_redis
from refunds.context import build_context
from refunds.models import State
from refunds.ops.metrics import render_metrics
from refunds.store.ledger import Ledger
from refunds.store.pacing import CredentialsGate
from tests.integration.test_stats import REPO, backdated, cli_env, intent, stats_json


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child: Child
    child, url = start_redis(tmp_path_factory.mktemp("alerts-redis"), appendonly=False)
    yield url
    child.stop()


def health(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refunds.ops.health", *args],
        env={**cli_env(url), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def metric(url: str, name: str) -> float:
    ctx = build_context(load_settings(profile="sandbox", redis_url=url, age_alert_after="10m"))
    body, _ = render_metrics(ctx)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_the_age_alert_fires_for_a_refund_in_flight_longer_than_the_limit(
    own_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.from_url(own_redis)
    ledger.redis.flushdb()
    with backdated(monkeypatch, 7200):  # two hours old, but waiting for a human: not in flight
        ledger.submit(intent("stopped"), due_in=600)
    ledger.transition(ledger.get("stopped"), State.NEEDS_ATTENTION, "test", actor="test")
    with backdated(monkeypatch, 300):
        ledger.submit(intent("young"), due_in=600)

    stats = stats_json(own_redis)
    assert stats["ageAlert"]["alert"] is False
    assert stats["ageAlert"]["afterSeconds"] == 3600.0
    assert stats["ageAlert"]["oldestInFlight"]["clientReference"] == "young"
    assert stats["oldestNonFinal"]["clientReference"] == "stopped"
    assert metric(own_redis, "refunds_age_alert") == 0.0
    assert health(own_redis, "--alerts").returncode == 0

    with backdated(monkeypatch, 5400):  # 90 minutes in flight
        ledger.submit(intent("old"), due_in=600)
    stats = stats_json(own_redis)
    assert stats["ageAlert"]["alert"] is True
    assert stats["ageAlert"]["oldestInFlight"]["clientReference"] == "old"
    assert 5400 <= stats["ageAlert"]["oldestInFlight"]["ageSeconds"] <= 5460
    assert metric(own_redis, "refunds_age_alert") == 1.0
    assert 5400 <= metric(own_redis, "refunds_oldest_in_flight_age_seconds") <= 5460

    human = subprocess.run(
        [sys.executable, "-m", "refunds.cli", "stats"],
        env=cli_env(own_redis),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "age alert: old in flight" in human.stdout

    loose = health(own_redis)
    assert loose.returncode == 0  # a liveness probe stays green
    assert "warning: age alert" in loose.stderr
    strict = health(own_redis, "--alerts")
    assert strict.returncode == 1
    assert "unhealthy: age alert: a refund in flight is 54" in strict.stderr
    # A longer limit: no alert.
    assert health(own_redis, "--alerts", REFUNDS_AGE_ALERT_AFTER="2h").returncode == 0


def test_refused_credentials_turn_health_and_a_metric_red_until_accepted(own_redis: str) -> None:
    ledger = Ledger.from_url(own_redis)
    ledger.redis.flushdb()
    assert metric(own_redis, "refunds_mce_credentials_refused") == 0.0
    assert health(own_redis).returncode == 0

    gate = CredentialsGate(ledger.redis, 30.0)
    assert gate.refused() is True  # the first to notice logs
    assert gate.refused() is False  # nobody else does
    assert metric(own_redis, "refunds_mce_credentials_refused") == 1.0
    red = health(own_redis)
    assert red.returncode == 1
    assert "MCE refuses our credentials" in red.stderr
    assert stats_json(own_redis)["credentialsRefusedSince"] is not None

    assert gate.accepted() is True
    assert metric(own_redis, "refunds_mce_credentials_refused") == 0.0
    assert health(own_redis).returncode == 0
    assert stats_json(own_redis)["credentialsRefusedSince"] is None
