"""Transport-neutral requests and responses, and the provider's success envelope.

The endpoint code builds a :class:`Response` value and the HTTP layer turns it into bytes; keeping
the two apart lets idempotency store a finished response and replay it byte for byte, and keeps
socket handling out of the business logic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Request:
    """What an endpoint needs from an HTTP request; header names are lower-cased."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Response:
    """A finished answer. ``drop``: close the connection and send nothing (a lost response)."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def json_response(payload: Any, status: int = 200) -> Response:
    """Plain JSON, used by the admin API (which is ours, not the provider's)."""
    return Response(status=status, body=dumps(payload))


def envelope(data: Mapping[str, Any]) -> Response:
    """The provider's success shape: ``{"code": "200", "msg": "success", "data": ...}``."""
    return Response(status=200, body=dumps({"code": "200", "msg": "success", "data": data}))


def seconds_value(seconds: float) -> int | float:
    """Whole seconds as an int (``3600``, ``Retry-After: 1``), fractions as a float (``0.3``)."""
    return int(seconds) if float(seconds).is_integer() else seconds
