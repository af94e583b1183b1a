"""The old import path of the process starters, kept so code written against it still imports.

New code imports ``devstack.processes`` (starters), ``devstack.wait`` (readiness) and
``devstack.stack`` (``LocalStack``, the composition with teardown).
"""

from collections.abc import Callable

from devstack.processes import (
    Child,
    celery_command,
    find_redis_server,
    free_port,
    redis_reachable,
    start_beat,
    start_flower,
    start_redis,
    start_sandbox,
    start_web,
    start_worker,
    wait_for_worker,
)
from devstack.wait import Watched
from devstack.wait import wait_until as _wait_until


def wait_until(
    check: Callable[[], object], timeout: float, what: str, child: Watched | None = None
) -> None:
    """The old argument order (``what`` third); new code calls ``devstack.wait.wait_until``."""
    _wait_until(check, timeout, what=what, child=child)


__all__ = [
    "Child",
    "celery_command",
    "find_redis_server",
    "free_port",
    "redis_reachable",
    "start_beat",
    "start_flower",
    "start_redis",
    "start_sandbox",
    "start_web",
    "start_worker",
    "wait_for_worker",
    "wait_until",
]
