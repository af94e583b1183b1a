"""HTTP handling and routing for the simulator.

Speed matters because benchmarks and chaos tests push thousands of calls through it: HTTP/1.1
keep-alive, TCP_NODELAY, and every response written with exactly one ``write`` (status line,
headers and body in one buffer). ``send_response``/``send_header``/``end_headers`` are avoided on
purpose: they write the head and body separately, and Nagle plus delayed ACK then stalls each
response by ~40 ms. No per-request logging unless ``verbose``.

The server also owns two kinds of background threads, all daemons, stopped by ``server_close``: the
webhook sender's delivery pool, and a ticker that applies due status changes every few ms while a
webhook URL is set (statuses otherwise advance only when read, and nobody may be reading).
"""

from __future__ import annotations

import logging
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox import problems
from sandbox.admin import PREFIX, AdminApi
from sandbox.config import API_VERSIONS, SandboxConfig
from sandbox.faults import FaultInjector
from sandbox.problems import ProviderError, problem_response
from sandbox.provider import TAILS, ProviderApi
from sandbox.responses import Request, Response
from sandbox.state import SandboxState
from sandbox.webhooks import WebhookSender

logger = logging.getLogger("sandbox")

Handler = Callable[[Request], Response]

#: Well-known sandbox credentials (a dev-only fake; the real ones come from settings).
DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105 - a published sandbox credential

#: Bodies above this are refused; the provider's requests are a few hundred bytes.
MAX_BODY = 1 << 20

#: How often due status changes are applied while webhooks are on (so at most this late).
TICK_SECONDS = 0.02

_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The ``Date`` header, formatted at most once per second (formatting is not free)."""
    global _date_cache  # noqa: PLW0603 - a one-entry cache shared by all handler threads
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def build_routes(provider: ProviderApi, admin: AdminApi) -> dict[str, dict[str, Handler]]:
    """Path -> method -> handler. A known path with another method is a 405, not a 404."""

    def op(name: str) -> Handler:
        return lambda request: provider.handle(name, request)

    methods = {"token": "POST", "create": "POST", "confirm": "POST", "get": "GET"}
    routes: dict[str, dict[str, Handler]] = {
        f"/{version}{tail}": {methods[name]: op(name)}
        for version in API_VERSIONS
        for name, tail in TAILS.items()
    }
    return routes | {
        f"{PREFIX}/healthz": {"GET": admin.healthz},
        f"{PREFIX}/payments": {"POST": admin.flag_payments},
        f"{PREFIX}/payments/webhooks": {"POST": admin.send_payment_webhooks},
        f"{PREFIX}/config": {"GET": admin.get_config, "POST": admin.update_config},
        f"{PREFIX}/revoke-tokens": {"POST": admin.revoke_tokens},
        f"{PREFIX}/counters": {"GET": admin.counters},
        f"{PREFIX}/reset": {"POST": admin.reset},
        f"{PREFIX}/webhooks": {"GET": admin.webhook_deliveries},
        f"{PREFIX}/webhooks/replay": {"POST": admin.replay_webhook},
        f"{PREFIX}/requests": {"GET": admin.recorded_requests},
    }


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "mce-sandbox/1.0"
    # Idle keep-alive connections are closed after this, so abandoned clients free their thread.
    timeout = 300
    server: SandboxServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        try:
            response = self._route(url.path, url.query)
        except ProviderError as error:
            response = problem_response(error, url.path)
        except Exception:
            logger.exception("sandbox: unhandled error on %s %s", self.command, url.path)
            unexpected = ProviderError(500, problems.INTERNAL_ERROR, "unexpected sandbox error")
            response = problem_response(unexpected, url.path)
        self._send(response)
        if self.server.verbose:
            elapsed_ms = (time.perf_counter() - started) * 1000
            status = "dropped" if response.drop else str(response.status)
            self.log_message('"%s %s" %s %.1fms', self.command, self.path, status, elapsed_ms)

    def _route(self, path: str, query: str) -> Response:
        # The body is read first, whatever the route, so the keep-alive stream stays in step.
        body = self._read_body()
        methods = self.server.routes.get(path)
        if methods is None:
            raise ProviderError(404, problems.NOT_FOUND, f"no endpoint at {path}")
        handler = methods.get(self.command)
        if handler is None:
            raise ProviderError(
                405,
                problems.METHOD_NOT_ALLOWED,
                f"{self.command} is not allowed on {path}",
                {"Allow": ", ".join(methods)},
            )
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(
            method=self.command,
            path=path,
            query=parse_qs(query, keep_blank_values=True),
            headers=headers,
            body=body,
        )
        return handler(request)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise problems.invalid("chunked request bodies are not supported; send Content-Length")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            # The stream can no longer be framed: answer and hang up.
            self.close_connection = True
            raise problems.invalid(f"Content-Length: must be an integer 0..{MAX_BODY}")
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response) -> None:
        if response.drop:
            # A lost response: the work is done, the client gets a closed connection and no bytes.
            self.close_connection = True
            return
        shaping = response.shaping
        length = len(response.body) if shaping is None else shaping.content_length(response.body)
        if length is None:
            self.close_connection = True  # no length: the end of the answer is the hang-up
        lines = [
            f"HTTP/1.1 {response.status} {_phrase(response.status)}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            f"Content-Type: {response.content_type}",
        ]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        lines.extend(f"{name}: {value}" for name, value in response.headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if shaping is None:
                self.wfile.write(head + response.body)
            else:
                shaping.write(self.wfile, head, response.body)
        except OSError:
            # The client gave up (typically a read timeout on a slow response); nothing to tell it.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class SandboxServer(ThreadingHTTPServer):
    """The simulator: a threaded HTTP server that owns the state, faults, webhooks and routes."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        state: SandboxState,
        faults: FaultInjector,
        *,
        client_id: str,
        client_secret: str,
        verbose: bool = False,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.state = state
        self.faults = faults
        self.verbose = verbose
        self.webhooks = webhooks or WebhookSender(lambda: state.config)
        self.provider = ProviderApi(state, faults, client_id=client_id, client_secret=client_secret)
        self.admin = AdminApi(state, faults, self.webhooks)
        self.routes = build_routes(self.provider, self.admin)
        self._ticker_stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="sandbox-ticker", daemon=True)
        super().__init__(address, SandboxHandler)
        # Only once bound: a port already in use must not leave threads behind.
        state.set_status_listener(self.webhooks.on_status_change)
        self.webhooks.start()
        self._ticker.start()

    def _tick(self) -> None:
        while not self._ticker_stop.wait(TICK_SECONDS):
            if self.state.config.webhook_url is not None:
                try:
                    self.state.advance_all()
                except Exception:
                    logger.exception("sandbox: ticker failed to advance refunds")

    def server_close(self) -> None:
        self._ticker_stop.set()
        self.state.set_status_listener(None)
        self.webhooks.close()
        if self._ticker.is_alive():
            self._ticker.join(timeout=1)
        super().server_close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can hang for seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def config(self) -> SandboxConfig:
        return self.state.config

    @config.setter
    def config(self, config: SandboxConfig) -> None:
        self.state.set_config(config)

    @property
    def url(self) -> str:
        return f"http://{self.server_name}:{self.server_port}"


def make_server(
    host: str,
    port: int,
    config: SandboxConfig | None = None,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    verbose: bool = False,
    seed: int | None = None,
) -> SandboxServer:
    """Bind a simulator (``port`` 0 picks a free one: read ``server.server_address``).

    The socket is listening when this returns; call ``serve_forever`` to answer.
    """
    state = SandboxState(config)
    return SandboxServer(
        (host, port),
        state,
        FaultInjector(seed),
        client_id=client_id,
        client_secret=client_secret,
        verbose=verbose,
        webhooks=WebhookSender(lambda: state.config, seed=seed),
    )


def serve(
    host: str,
    port: int,
    config: SandboxConfig | None = None,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    verbose: bool = False,
    seed: int | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly. Must run in the main thread.

    Prints ``sandbox listening on http://HOST:PORT`` once the socket is listening, so a parent
    process (tests, honcho, the demo) can wait for that line instead of polling.
    """
    server = make_server(
        host,
        port,
        config,
        client_id=client_id,
        client_secret=client_secret,
        verbose=verbose,
        seed=seed,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    loop = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sandbox-http", daemon=True
    )
    loop.start()
    try:
        print(f"sandbox listening on {server.url}", flush=True)
        while not stop.wait(0.1):
            pass
    finally:
        server.shutdown()
        server.server_close()
        loop.join(timeout=5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["SandboxHandler", "SandboxServer", "make_server", "serve"]
