"""The one "wait until" of the dev tooling: poll a predicate until it holds, or time out.

Used by the process starters (readiness), the tests (a record reaches a state), the benchmarks
(all refunds settled) and the chaos harness. A predicate that raises counts as "not yet": a
server that is still starting refuses connections, and that is exactly what we wait out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Watched(Protocol):
    """A process whose early death should end the wait at once (``devstack.processes.Child``)."""

    name: str

    @property
    def alive(self) -> bool: ...

    def tail(self, lines: int = 30) -> str: ...


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    *,
    child: Watched | None = None,
) -> float:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy.

    Returns the ``time.monotonic()`` at which it held (benchmarks time with it). Raises
    ``TimeoutError`` naming ``what`` after ``timeout`` seconds, or ``RuntimeError`` with the last
    lines of its log if ``child`` exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return time.monotonic()
        except Exception:  # noqa: BLE001, S110 - not ready yet (refused connection, missing file)
            pass
        if child is not None and not child.alive:
            raise RuntimeError(f"{child.name} exited while starting:\n{child.tail()}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(interval)
