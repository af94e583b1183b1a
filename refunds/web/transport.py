"""Transport policy for request bodies: a size limit on every route, JSON only where JSON is due.

Body limit (``REFUNDS_MAX_BODY_BYTES``, 64 KiB by default): enforced while reading, as an ASGI
middleware in front of every route, so a handler never holds more than the limit in memory. A
declared ``Content-Length`` above it is answered 413 before a byte is read; a body without one
(chunked) is counted as it streams and stopped at the limit. Either way the handler has not run
its effect yet (every route reads its whole body before acting), so nothing is written.

Content-Type: routes built with ``JsonBodyRoute`` take a JSON body and accept it only as
``application/json`` or ``application/*+json`` (any parameters, e.g. ``charset``); anything else,
a missing header included, is 415. Decided here rather than left to FastAPI, whose default for a
missing Content-Type changed in a minor release. MCE's webhook route is not such a route: it is
authenticated over its raw bytes and the provider documents no Content-Type.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from refunds.web.errors import problem

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def too_large(limit: int) -> str:
    return f"body larger than {limit} bytes"


class BodyLimitMiddleware:
    """413 for a request body above ``limit`` bytes: by Content-Length, or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await problem(413, too_large(self.limit))(scope, receive, send)
            return
        size = 0

        async def counted() -> Any:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.limit:
                    # Raised inside the handler's body read; the app's HTTPException handler
                    # answers it, before the handler did anything.
                    raise HTTPException(413, too_large(self.limit))
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, any parameters; False when missing."""
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


class JsonBodyRoute(APIRoute):
    """A route whose body, if its method takes one, must be declared as JSON (else 415).

    Checked before FastAPI reads or parses the body, so the answer does not depend on what the
    body happens to contain.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method in BODY_METHODS and not is_json(
                request.headers.get("content-type")
            ):
                return problem(
                    415, "Content-Type must be application/json (or application/*+json)"
                )
            return await handler(request)

        return checked
