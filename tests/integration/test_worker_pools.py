"""A worker refuses the pools that enforce no Celery time limit (``solo``, ``threads``).

A stuck provider call in such a pool is never cut short, and the step's heartbeat keeps its
refund's lease for ever. Started for real, as an operator would start it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


def start_worker(redis_db: str, *pool: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFUNDS_PROFILE": "sandbox", "REDIS_URL": redis_db}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.app",
            "worker",
            *pool,
            "--without-mingle",
            "--without-gossip",
            "-Q",
            "refunds.nothing",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "threads"], ["--pool=threads"]])
def test_a_worker_with_a_pool_without_time_limits_refuses_to_start(
    redis_db: str, pool: list[str]
) -> None:
    started = time.monotonic()
    result = start_worker(redis_db, *pool)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "enforces no task time limit" in result.stderr
    assert "prefork" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
