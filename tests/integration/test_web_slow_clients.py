"""The web app holds up against slow and idle clients: a real ``refunds web`` (uvicorn) process on a
free loopback port, clients that trickle, clients that idle, and an open-files limit of 1,024.

Every loop below is bounded by a count and a time; every socket is closed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from devstack.localstack import free_port, start_redis, wait_until
from tests.conftest import TEST_ENV

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 2.0  # --read-deadline for these tests (the default is 30 s)
IDLE_CLIENTS = 1100
OPEN_FILES = 1024
WEB_COMMAND = [sys.executable, "-m", "refunds.cli", "web", "--host", "127.0.0.1"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("web-slow-redis"))
    yield url
    child.stop()


@dataclass
class Web:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def refunds_web(
    tmp_path: Path, broker: str, *options: str, open_files: int | None = None
) -> Iterator[Web]:
    """``refunds web`` as the Procfile starts it, optionally under ``ulimit -n open_files``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUNDS_", "MCE_"))}
    env.update({**TEST_ENV, "REDIS_URL": broker})
    env["REFUNDS_DATABASE_URL"] = os.environ["REFUNDS_DATABASE_URL"]  # the session's, migrated

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    log_path = tmp_path / f"web-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*WEB_COMMAND, "--port", str(port), *options],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,  # noqa: PLW1509 - only setrlimit, before exec
            start_new_session=True,
        )
    web = Web(proc, port, log_path)
    try:

        def up() -> bool:
            assert proc.poll() is None, web.log()
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(web.url + "/healthz", timeout=1).ok
            return False

        wait_until(up, 30, what="refunds web")
        yield web
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class Trickler:
    """A client that sends its request one byte at a time and notes when the server closes."""

    sock: socket.socket
    rest: bytes
    opened: float
    closed_after: float | None = None
    received: bytes = field(default=b"")


HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
BODY = (
    b"POST /webhooks/mce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 500\r\n\r\n" + b" " * 500
)


def trickle(port: int, requests_: list[bytes], limit: float) -> list[Trickler]:
    clients = []
    try:
        for raw in requests_:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            head_end = raw.index(b"\r\n\r\n") + 4 if raw.startswith(b"POST") else 0
            sock.send(raw[:head_end])  # a body trickler sends its whole head at once
            clients.append(Trickler(sock, raw[head_end:], time.monotonic()))
        stop = time.monotonic() + limit
        for _ in range(int(limit / 0.2) + 1):
            open_ = [c for c in clients if c.closed_after is None]
            if not open_ or time.monotonic() > stop:
                break
            for c in open_:
                with contextlib.suppress(BlockingIOError, ConnectionError):
                    if c.rest:
                        c.sock.send(c.rest[:1])
                        c.rest = c.rest[1:]
            readable, _, _ = select.select([c.sock for c in open_], [], [], 0.2)
            for c in open_:
                if c.sock in readable:
                    try:
                        chunk = c.sock.recv(4096)
                    except ConnectionError:
                        chunk = b""
                    c.received += chunk
                    if not chunk:
                        c.closed_after = time.monotonic() - c.opened
    finally:
        for c in clients:
            c.sock.close()
    return clients


def test_trickled_heads_and_bodies_are_closed_by_the_read_deadline(
    tmp_path: Path, broker: str
) -> None:
    with refunds_web(tmp_path, broker, "--read-deadline", str(DEADLINE)) as web:
        clients = trickle(web.port, [HEAD] * 40 + [BODY] * 40, limit=DEADLINE + 10)
        times = [c.closed_after for c in clients]
        assert all(t is not None for t in times), f"still open: {times.count(None)} of 80"
        closed = [t for t in times if t is not None]
        print(f"trickled connections closed after {min(closed):.2f}..{max(closed):.2f} s")
        assert max(closed) <= DEADLINE + 1.5
        assert min(closed) >= DEADLINE - 0.1
        for c in clients:
            assert c.received.startswith(b"HTTP/1.1 408 "), c.received[:80]
        assert requests.get(web.url + "/healthz", timeout=2).ok
        assert "Traceback" not in web.log()


def test_an_idle_connection_that_sends_nothing_is_closed_by_the_deadline(
    tmp_path: Path, broker: str
) -> None:
    with refunds_web(tmp_path, broker, "--read-deadline", str(DEADLINE)) as web:
        (idle,) = trickle(web.port, [b""], limit=DEADLINE + 5)
        assert idle.closed_after is not None
        assert DEADLINE - 0.1 <= idle.closed_after <= DEADLINE + 1.5


def first_answer(sock: socket.socket) -> bytes:
    """The whole answer to ``GET /healthz`` (head and body may come in separate segments)."""
    answer = b""
    for _ in range(20):
        if answer.endswith(b'{"ok":true}'):
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def test_a_kept_alive_connection_closes_after_the_keep_alive_timeout(
    tmp_path: Path, broker: str
) -> None:
    with (
        refunds_web(tmp_path, broker, "--keep-alive", "1", "--read-deadline", "30") as web,
        socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = first_answer(sock)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b'{"ok":true}')
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(4096) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - started <= 2.5


def test_a_next_request_trickled_on_a_kept_alive_connection_meets_the_deadline(
    tmp_path: Path, broker: str
) -> None:
    # Its first byte stops the keep-alive timer; from then on the read deadline counts.
    with (
        refunds_web(tmp_path, broker, "--keep-alive", "1", "--read-deadline", str(DEADLINE)) as web,
        socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock,
    ):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first_answer(sock).endswith(b'{"ok":true}')
        sock.setblocking(False)
        started = time.monotonic()
        answer = b""
        for byte in HEAD[: int((DEADLINE + 5) / 0.2)]:
            with contextlib.suppress(BlockingIOError, ConnectionError):
                sock.send(bytes([byte]))
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                with contextlib.suppress(ConnectionError):
                    chunk = sock.recv(4096)
                    answer += chunk
                    if not chunk:
                        break
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert DEADLINE - 0.1 <= took <= DEADLINE + 1.5


def open_idle(port: int, count: int, within: float) -> list[socket.socket]:
    """``count`` connections that never send a byte (non-blocking connects, then established).

    Opened 100 at a time, 0.1 s apart, so the server really accepts them: a burst beyond its listen
    queue would be completed by SYN cookies on our side only, and never reach it.
    """
    socks = []
    for i in range(count):
        if i and i % 100 == 0:
            time.sleep(0.1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    poller = select.poll()  # select() cannot watch descriptors above 1023
    for sock in socks:
        poller.register(sock, select.POLLOUT)
    pending = {sock.fileno() for sock in socks}
    stop = time.monotonic() + within
    for _ in range(1000):
        if not pending or time.monotonic() > stop:
            break
        for fd, _ in poller.poll(200):
            poller.unregister(fd)
            pending.discard(fd)
    return socks


def timed(call: object) -> tuple[float, requests.Response]:
    started = time.monotonic()
    answer = call()  # type: ignore[operator]
    return time.monotonic() - started, answer


def test_healthz_and_the_webhook_answer_with_1100_idle_connections_and_1024_open_files(
    tmp_path: Path, broker: str
) -> None:
    with refunds_web(tmp_path, broker, open_files=OPEN_FILES) as web:
        socks = open_idle(web.port, IDLE_CLIENTS, within=20)
        try:
            health_s, health = timed(lambda: requests.get(web.url + "/healthz", timeout=2))
            hook_s, hook = timed(
                lambda: requests.post(
                    web.url + "/webhooks/mce",
                    data=b"{}",
                    headers={"Content-Type": "application/json"},
                    timeout=2,
                )
            )
            print(f"with {IDLE_CLIENTS} idle: /healthz {health_s:.3f} s, webhook {hook_s:.3f} s")
            assert health.status_code == 200
            assert hook.status_code == 401  # answered: unsigned, so refused by signature
            assert health_s < 2.0
            assert hook_s < 2.0
        finally:
            for sock in socks:
                sock.close()
        log = web.log()
        assert "Too many open files" not in log
        assert "open-files limit 1024" in log


def test_past_the_cap_the_longest_idle_connection_makes_room(tmp_path: Path, broker: str) -> None:
    with refunds_web(tmp_path, broker, "--max-connections", "5") as web:
        socks = open_idle(web.port, 5, within=5)
        try:
            time.sleep(0.3)
            assert requests.get(web.url + "/healthz", timeout=2).ok
            select.select(socks[:1], [], [], 2)
            assert socks[0].recv(10) == b"", "the oldest idle connection stays open"
        finally:
            for sock in socks:
                sock.close()


def test_past_the_cap_with_every_connection_busy_a_new_one_gets_503(
    tmp_path: Path, broker: str
) -> None:
    with refunds_web(tmp_path, broker, "--max-connections", "3", "--read-deadline", "10") as web:
        busy = []
        try:
            for _ in range(3):
                sock = socket.create_connection(("127.0.0.1", web.port), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # head not finished
                busy.append(sock)
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", web.port), timeout=5) as extra:
                extra.settimeout(5)
                answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"retry-after: 1" in answer.lower()
            assert b"connection limit" in answer
        finally:
            for sock in busy:
                sock.close()


def test_accept_errors_log_one_line_per_burst(tmp_path: Path, broker: str) -> None:
    # A cap set above what the open-files limit allows (the start-up warns): accept() fails.
    with refunds_web(tmp_path, broker, "--max-connections", "4000", open_files=OPEN_FILES) as web:
        # More clients than descriptors even with a full listen queue (128) holding some.
        socks = open_idle(web.port, OPEN_FILES + 400, within=10)
        try:
            wait_until(lambda: "Too many open files" in web.log(), 30, what="accept errors")
            time.sleep(3)  # the burst goes on: asyncio retries accept() many times a second
        finally:
            for sock in socks:
                sock.close()
        log = web.log()
    assert "is above what the open-files limit 1024 leaves" in log
    lines = [line for line in log.splitlines() if "accept" in line and "open-files" in line]
    assert len([line for line in lines if "cannot accept connections" in line]) == 1, lines
    assert "out of system resource" not in log
    assert log.count("Too many open files") == 1
    assert "Traceback" not in log
