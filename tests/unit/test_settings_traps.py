"""Settings refuse the Celery runtime's timing traps at start (issue 11).

A provider call that may still wait when the soft time limit fires is cut off after the provider
may have applied it; a soft limit at or above the hard one never fires; a lease at or below the
hard limit hands a refund to a second worker while the first still runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.stack import PIPELINE_ENV
from config.settings import load_settings
from refunds.errors import ConfigError
from tests.conftest import TEST_ENV

ROOT = Path(__file__).resolve().parents[2]


def _overrides(env: dict[str, str]) -> dict[str, str]:
    return {
        key.removeprefix("REFUNDS_").lower(): value
        for key, value in env.items()
        if key.startswith("REFUNDS_")
    }


def test_defaults_respect_every_rule() -> None:
    s = load_settings(profile="sandbox")
    assert 2 * (s.http_connect_timeout + s.http_read_timeout) < s.task_soft_time_limit
    assert s.task_soft_time_limit < s.task_time_limit < s.lease_seconds


def test_the_test_environment_validates() -> None:
    s = load_settings(**_overrides(TEST_ENV))
    assert (s.http_connect_timeout, s.http_read_timeout) == (1.0, 2.0)
    assert (s.task_soft_time_limit, s.task_time_limit, s.lease_seconds) == (8.0, 10.0, 12.0)


def test_the_bench_environment_validates() -> None:
    # The chaos runs use TEST_ENV (tests/chaos/harness.py), checked above.
    s = load_settings(**_overrides(PIPELINE_ENV))
    assert 2 * (s.http_connect_timeout + s.http_read_timeout) < s.task_soft_time_limit


@pytest.mark.parametrize(
    ("connect", "read", "soft", "ok"),
    [
        (3.05, 10.0, 45.0, True),  # defaults: 26.1 s of calls under 45 s
        (3.0, 19.0, 45.0, True),  # 44 s < 45 s
        (3.0, 19.5, 45.0, False),  # 45 s is not under 45 s
        (5.0, 60.0, 45.0, False),  # a read timeout above the soft limit on its own
        (1.0, 2.0, 6.5, True),
        (1.0, 2.0, 6.0, False),
    ],
)
def test_connect_plus_read_twice_must_fit_under_the_soft_limit(
    connect: float, read: float, soft: float, ok: bool
) -> None:
    def build() -> object:
        return load_settings(
            profile="sandbox",
            http_connect_timeout=connect,
            http_read_timeout=read,
            task_soft_time_limit=soft,
            task_time_limit=soft + 10,
            lease_seconds=soft + 30,
        )

    if ok:
        build()
    else:
        with pytest.raises(ConfigError, match="must fit under REFUNDS_TASK_SOFT_TIME_LIMIT"):
            build()


@pytest.mark.parametrize(("soft", "hard"), [(60.0, 60.0), (61.0, 60.0)])
def test_soft_limit_must_be_below_the_hard_limit(soft: float, hard: float) -> None:
    with pytest.raises(ConfigError, match="SOFT_TIME_LIMIT must be below REFUNDS_TASK_TIME_LIMIT"):
        load_settings(
            profile="sandbox", task_soft_time_limit=soft, task_time_limit=hard, lease_seconds=90
        )


@pytest.mark.parametrize("lease", [60.0, 59.0])
def test_lease_must_exceed_the_hard_limit(lease: float) -> None:
    with pytest.raises(ConfigError, match="LEASE_SECONDS must exceed REFUNDS_TASK_TIME_LIMIT"):
        load_settings(profile="sandbox", task_time_limit=60, lease_seconds=lease)


def test_a_worker_with_a_trap_stops_at_start_with_one_line() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REFUNDS_", "MCE_"))},
        "REFUNDS_PROFILE": "sandbox",
        "REFUNDS_HTTP_READ_TIMEOUT": "50",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: the settings stop it first
    }
    proc = subprocess.run(
        [sys.executable, "-c", "import worker.app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("refunds: invalid configuration: ")
    assert "must fit under REFUNDS_TASK_SOFT_TIME_LIMIT" in lines[0]
