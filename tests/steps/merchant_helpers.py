"""A merchant's callback endpoint for the step tests, and delivery of the outbox as the
``notifications.deliver`` task does it (``refunds.notify.Notifier``), in this process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import Celery

from refunds.context import Context
from refunds.notify import Notifier


class Merchant:
    """Records the JSON body of every callback it receives, and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        merchant = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                merchant.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/outcomes"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @classmethod
    def serving(cls) -> Iterator[Merchant]:
        merchant = cls()
        yield merchant
        merchant.close()


def deliver_outbox(worker: Context, rounds: int = 3) -> list[str]:
    """Deliver every due outbox entry with ``worker``'s settings, as the tick and the
    ``notifications.deliver`` task would (an entry may queue others: a few rounds). Answers
    the delivery notes."""
    notifier = Notifier(worker.settings, worker.ledger, Celery("merchant-test"))
    notes = []
    for _ in range(rounds):
        members = [m for m, due in worker.outbox.pending() if due <= _redis_now(worker)]
        for member in members:
            notes.append(notifier.deliver(member).note)
    return notes


def _redis_now(p: Context) -> float:
    seconds, micros = p.ledger.redis.time()
    return float(seconds) + micros / 1e6
