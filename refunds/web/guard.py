"""The connection guard: uvicorn's HTTP/1.1 protocol with a read deadline and a connection cap.

uvicorn (0.55) reads a request for as long as the client cares to send it: a head or a body
trickled one byte at a time keeps its connection, and a connection that never sends a byte is
kept forever (the keep-alive timer only starts after a first response). Eighty tricklers, or a
thousand idle sockets against a 1,024 open-files limit, were enough to stop ``/healthz`` and
MCE's webhook from answering. This protocol closes that door at the transport, below the app:

- **Read deadline.** From the moment a connection opens, and again from the first byte of each
  next request on a kept-alive connection, the whole request (head and body) must arrive within
  ``read_deadline`` seconds. Past it the client gets ``408 Request Timeout`` (if no answer was
  started) and the connection closes; a handler waiting for the body sees a disconnect. Between
  requests uvicorn's keep-alive timeout applies.
- **Connection cap.** At most ``max_connections`` connections per process. A new connection past
  the cap closes the longest-idle one (no request in flight: a fresh socket that sent nothing, or
  a kept-alive one between requests), as nginx does with its reusable connections. If every
  connection has a request in flight, the new one gets ``503`` with ``Connection: close`` and
  ``Retry-After``. The cap sits below the open-files limit, so ``accept()`` keeps working and a
  probe of ``/healthz`` or a webhook delivery is served however many idle sockets are open.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

logger = logging.getLogger("refunds.web.guard")


def _raw_response(status: str, text: str, extra: str = "") -> bytes:
    body = text.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """H11Protocol plus the read deadline and the connection cap (limits from the config).

    The config is ``refunds.web.server.GuardedConfig``, which carries ``read_deadline`` and
    ``max_connections`` (the latter worked out in each process from its open-files limit).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_deadline: float = getattr(config, "read_deadline", 30.0)
        self.max_connections: int = getattr(config, "max_connections", 1000)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = False  # a request is in flight: its bytes are arriving, or it is served
        self._idle_since = 0.0

    # --- connection cap ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._arm_deadline()
        if len(self.connections) > self.max_connections and not self._evict_one_idle():
            self._refuse_over_capacity()

    def _evict_one_idle(self) -> bool:
        """Close the longest-idle other connection; False if every one has a request in flight."""
        oldest: GuardedH11Protocol | None = None
        for other in self.connections:
            if (
                other is not self
                and isinstance(other, GuardedH11Protocol)
                and not other._reading
                and not other.transport.is_closing()
                and (oldest is None or other._idle_since < oldest._idle_since)
            ):
                oldest = other
        if oldest is None:
            return False
        oldest.transport.close()
        return True

    def _refuse_over_capacity(self) -> None:
        logger.warning(
            "refused a connection: all %d connections have a request in flight",
            self.max_connections,
        )
        self.transport.write(
            _raw_response(
                "503 Service Unavailable",
                "server at its connection limit; retry shortly",
                "retry-after: 1\r\n",
            )
        )
        self.transport.close()

    # --- read deadline -------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if not self._reading:
            self._reading = True
            self._arm_deadline()
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            self._cancel_deadline()  # the whole request is read; the app has it

    def on_response_complete(self) -> None:
        self._cancel_deadline()
        self._reading = False
        self._idle_since = self.loop.time()
        super().on_response_complete()
        cycle = self.cycle  # a pipelined request may have started inside the call above
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            self._reading = True
            self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.read_deadline, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answered = cycle is not None and not cycle.response_complete and cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The app's receive() now returns http.disconnect and its send() is ignored.
            cycle.disconnected = True
            cycle.message_event.set()
        if not answered:
            self.transport.write(
                _raw_response(
                    "408 Request Timeout",
                    f"request not received within {self.read_deadline:g} s",
                )
            )
        self.transport.close()
