"""``devstack.wait.wait_until``: returns when the predicate holds, names what timed out, and stops
at once when the watched process dies."""

from __future__ import annotations

import itertools
import time

import pytest

from devstack.wait import wait_until


class FakeChild:
    name = "worker7"

    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def tail(self, lines: int = 30) -> str:
        return "boom: the last log line"


def test_returns_once_the_predicate_holds_and_retries_through_exceptions() -> None:
    calls = itertools.count(1)

    def ready() -> bool:
        n = next(calls)
        if n == 1:
            raise ConnectionRefusedError  # not listening yet
        return n >= 3

    before = time.monotonic()
    at = wait_until(ready, 5, interval=0.01, what="ready")
    assert before <= at <= time.monotonic()
    assert next(calls) == 4  # called exactly three times


def test_times_out_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="the sandbox not reached within 0s"):
        wait_until(lambda: False, 0.2, interval=0.01, what="the sandbox")
    assert 0.2 <= time.monotonic() - started < 2


def test_a_dead_child_ends_the_wait_with_its_log() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="worker7 exited while starting:\nboom"):
        wait_until(lambda: False, 30, what="worker", child=FakeChild(alive=False))
    assert time.monotonic() - started < 1
