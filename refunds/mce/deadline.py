"""A total deadline for one HTTP exchange with MCE, and a size cap on its answer.

requests (and urllib3 under it) only know per-read timeouts: a provider that sends one byte every
few seconds never trips them, and a call could last until Celery's soft time limit interrupted it,
with nothing recorded. Here every call gets a deadline for the whole exchange (connect, send, the
head and the whole body). One watchdog thread per process holds the armed deadlines; when one
passes, it shuts down the socket of that call's connection, which ends any read blocked on it at
once, whatever phase it is in. The caller sees the broken read, asks :meth:`CallGuard.expired`,
and raises a typed timeout.

The socket is found through a connection class of our own (the session's adapter installs it),
which attaches itself to the guard of the call running in its thread (a context variable, so
concurrent calls in threads never see each other's guard).

The answer is read in chunks and refused past a cap: a 100 MiB answer, or a body that never
ends, costs at most the cap (plus a chunk) of memory.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: Bytes read per step of an answer: small next to the cap, large enough to be cheap.
CHUNK_BYTES = 64 * 1024

_current: ContextVar[CallGuard | None] = ContextVar("mce_call_guard", default=None)


class AnswerTooLarge(Exception):  # noqa: N818 - internal signal, mapped to MceProtocolError
    """The answer passed the cap; ``declared`` is its Content-Length when it announced one."""

    def __init__(self, cap: int, declared: int | None) -> None:
        self.cap = cap
        self.declared = declared
        super().__init__(f"answer larger than {cap} bytes")


class CallGuard:
    """The deadline of one call and the connections it used (normally one)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._fired = False
        self._done = False

    def attach(self, sock: socket.socket) -> None:
        """Watch ``sock``: held directly, since http.client drops the connection's reference
        to it (``conn.sock = None``) as soon as an answer says it closes the connection."""
        with self._lock:
            if self._done:
                return
            self._sockets.append(sock)
            if self._fired:
                _shut(sock)

    def fire(self) -> None:
        """Called by the watchdog at the deadline: break every read of this call."""
        with self._lock:
            if self._done:
                return
            self._fired = True
            for sock in self._sockets:
                _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._sockets.clear()

    @property
    def finished(self) -> bool:
        return self._done

    @property
    def fired(self) -> bool:
        """Whether the watchdog broke this call's connection. An answer read after that is not
        to be trusted even when no read failed: a head cut short reads as a head with no fields,
        and a body without a length as one that ended."""
        return self._fired

    def expired(self) -> bool:
        """Whether the deadline passed (the watchdog fired, or is about to)."""
        return self._fired or time.monotonic() >= self.expires


def _shut(sock: socket.socket) -> None:
    # A blocked read returns at once; a socket already closed for good raises EBADF, ignored.
    # The plain socket's shutdown, also for TLS: SSLSocket.shutdown drops its SSL object, which
    # a read running in the call's thread may be using at that very moment.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread per process firing due guards (a heap ordered by deadline)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, CallGuard]] = []
        self._order = itertools.count()
        self._started = False

    def arm(self, guard: CallGuard) -> None:
        with self._cond:
            if not self._started:
                threading.Thread(target=self._run, name="mce-deadline", daemon=True).start()
                self._started = True
            heapq.heappush(self._heap, (guard.expires, next(self._order), guard))
            if self._heap[0][2] is guard:  # a new earliest deadline: the thread must wake sooner
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                guard = heapq.heappop(self._heap)[2]
            guard.fire()


_watchdog = _Watchdog()


def _after_fork_in_child() -> None:
    # Neither the parent's thread nor the state of its lock survives a fork (a pool process is
    # forked from the worker): the child gets a fresh watchdog, started on its first call.
    global _watchdog  # noqa: PLW0603 - one per process by design
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def guarded(seconds: float) -> Iterator[CallGuard]:
    """Run one call under a deadline of ``seconds``; connections it opens or reuses attach."""
    guard = CallGuard(seconds)
    token = _current.set(guard)
    _watchdog.arm(guard)
    try:
        yield guard
    finally:
        guard.finish()
        _current.reset(token)


def _attach(connection: HTTPConnection) -> None:
    guard = _current.get()
    sock = connection.sock
    if guard is not None and sock is not None:
        guard.attach(sock)


class _GuardedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _attach(self)  # a guard that fired while connecting shuts the new socket at once

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)  # a reused connection, already connected
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_POOLS = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections (direct or through a proxy) honour :func:`guarded`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def read_capped(response: requests.Response, cap: int, guard: CallGuard | None = None) -> bytes:
    """The whole body of a ``stream=True`` response, or :class:`AnswerTooLarge` past ``cap``.

    An announced Content-Length over the cap is refused before reading anything. Reading stops
    as soon as ``guard`` fired: on Linux a shut-down socket still hands over data that arrives
    later, so a trickle could otherwise go on feeding the reader.
    """
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise AnswerTooLarge(cap, int(declared))
    body = bytearray()
    for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
        if guard is not None and guard.fired:
            break  # the caller sees ``fired`` and discards what came
        body += chunk
        if len(body) > cap:
            raise AnswerTooLarge(cap, None)
    return bytes(body)
