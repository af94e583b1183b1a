"""How ``refunds web`` serves the app: uvicorn with limits that hold against slow and idle clients.

- The HTTP protocol is ``refunds.web.guard.GuardedH11Protocol``: a read deadline on every request
  (``--read-deadline``, 30 s by default, at most 60) and a cap on connections per process.
- The open-files limit: at start each process raises its soft ``RLIMIT_NOFILE`` to the hard limit
  (allowed without privileges), then sets the connection cap ``NOFILE_RESERVE`` below it (Redis
  connections, the thread pool, logs), unless ``--max-connections`` says otherwise.
- Keep-alive: an idle kept-alive connection closes after ``--keep-alive`` seconds (5 by default).
- Accept errors: when ``accept()`` fails for want of file descriptors, asyncio logs an error with
  a traceback for every attempt, thousands a second (62,476 lines in 6 s were seen).
  ``AcceptErrorFilter`` lets one line through per burst (at most one per ``ACCEPT_LOG_EVERY``
  seconds), saying how many it held back.

A reverse proxy in front should add its own limits (docs/deployment-reverse-proxy.md).
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from refunds.web.guard import GuardedH11Protocol

logger = logging.getLogger("refunds.web.server")

MAX_READ_DEADLINE = 60.0
ACCEPT_BATCH = 128  # the listen backlog, which is also how many sockets asyncio accepts at once
# Descriptors kept free below the open-files limit: accepted sockets land before the cap can
# close idle ones (up to three accept batches), plus Redis connections, the thread pool, logs.
NOFILE_RESERVE = 3 * ACCEPT_BATCH + 128
ACCEPT_LOG_EVERY = 60.0
ACCEPT_ERROR_PREFIX = "socket.accept() out of system resource"


@dataclass(frozen=True)
class ServerLimits:
    """The limits ``refunds web`` runs with (its options; documented there)."""

    read_deadline: float = 30.0
    keep_alive: int = 5
    max_connections: int | None = None  # None: the open-files limit minus NOFILE_RESERVE

    def __post_init__(self) -> None:
        if not 0 < self.read_deadline <= MAX_READ_DEADLINE:
            raise ValueError(f"read deadline must be in (0, {MAX_READ_DEADLINE:g}] seconds")


class AcceptErrorFilter(logging.Filter):
    """One log line per burst of ``accept()`` errors instead of one per failed attempt.

    Installed on the ``asyncio`` logger. The first error of a burst passes, shortened to one line
    (no traceback: it is always the same one); later ones within ``every`` seconds are counted,
    and the next line that passes says how many were held back.
    """

    def __init__(self, every: float = ACCEPT_LOG_EVERY) -> None:
        super().__init__("asyncio")
        self.every = every
        self._last: float | None = None
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(ACCEPT_ERROR_PREFIX):
            return True
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            self._held += 1
            return False
        error = record.exc_info[1] if record.exc_info else None
        held, self._held, self._last = self._held, 0, now
        record.msg = (
            "cannot accept connections: %s (open-files limit reached); "
            "further accept errors are logged at most once every %g s (%d held back before this)"
        )
        record.args = (error or "out of system resource", self.every, held)
        record.exc_info = None
        record.exc_text = None
        return True


def install_accept_error_filter() -> None:
    target = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorFilter) for f in target.filters):
        target.addFilter(AcceptErrorFilter())


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit from %d: %s", soft, exc)
    return soft


def connection_cap(limits: ServerLimits, open_files: int) -> int:
    budget = max(open_files - NOFILE_RESERVE, 16)
    if limits.max_connections is None:
        return budget
    if limits.max_connections > budget:
        logger.warning(
            "--max-connections %d is above what the open-files limit %d leaves (%d): accept "
            "errors will follow when that many clients connect",
            limits.max_connections,
            open_files,
            budget,
        )
    return limits.max_connections


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config plus our limits; ``load()`` (run in every worker process) applies them."""

    def __init__(self, app: Any, *, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(
            app,
            http=GuardedH11Protocol,
            timeout_keep_alive=limits.keep_alive,
            backlog=ACCEPT_BATCH,
            **kwargs,
        )
        self.limits = limits
        self.read_deadline = limits.read_deadline
        self.max_connections = limits.max_connections or 0

    def load(self) -> None:
        install_accept_error_filter()
        open_files = raise_open_files_limit()
        self.max_connections = connection_cap(self.limits, open_files)
        super().load()
        logger.info(
            "serving with a %g s read deadline, %d s keep-alive, at most %d connections "
            "(open-files limit %d)",
            self.read_deadline,
            self.timeout_keep_alive,
            self.max_connections,
            open_files,
        )


def serve(app: str, *, host: str, port: int, workers: int, limits: ServerLimits) -> None:
    """Run ``app`` (an import string of a factory) as uvicorn.run would, with the guard."""
    config = GuardedConfig(
        app,
        limits=limits,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    if workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE; it has logged why (e.g. port in use)
