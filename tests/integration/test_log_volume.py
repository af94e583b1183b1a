"""The scheduler tick is quiet at INFO: a real worker and beat, ticking four times a second, write
no line about it at INFO, and Celery's three lines per tick still appear at DEBUG."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.processes import Child, start_beat, start_redis, start_worker, wait_for_worker
from tests.conftest import TEST_ENV

SECONDS = 4.0


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("log-volume-redis"))
    yield url
    child.stop()


def _tick_lines(children: list[Child]) -> list[str]:
    text = "\n".join(c.log_path.read_text(errors="replace") for c in children)
    return [line for line in text.splitlines() if "refunds.tick" in line]


def _run(private_redis: str, logdir: Path, level: str) -> tuple[list[str], int]:
    env = {**TEST_ENV, "REDIS_URL": private_redis, "REFUNDS_LOG_LEVEL": level}
    children: list[Child] = []
    try:
        worker = start_worker(logdir, env, name=f"worker-{level}", concurrency=1)
        children.append(worker)
        wait_for_worker(worker)
        children.append(start_beat(logdir, env, name=f"beat-{level}"))
        before = len(_tick_lines(children))
        time.sleep(SECONDS)
        lines = _tick_lines(children)[before:]
        total = sum(len(c.log_path.read_text(errors="replace").splitlines()) for c in children)
        return lines, total
    finally:
        for child in reversed(children):
            child.stop()


def test_the_tick_writes_no_info_line_and_three_debug_lines_per_tick(
    private_redis: str, tmp_path: Path
) -> None:
    info, _ = _run(private_redis, tmp_path, "INFO")
    assert info == []
    debug, _ = _run(private_redis, tmp_path, "DEBUG")
    ticks = SECONDS / float(TEST_ENV["REFUNDS_TICK_INTERVAL"])
    assert len(debug) >= ticks  # the search finds the lines where they are logged
    assert all('"level": "debug"' in line for line in debug)
    assert any("Sending due task" in line for line in debug)
    assert any("succeeded" in line for line in debug)
