"""Transport-neutral requests and responses, and the provider's success envelope.

The endpoint code builds a :class:`Response` value and the HTTP layer turns it into bytes; keeping
the two apart lets idempotency store a finished response and replay it byte for byte, and keeps
socket handling out of the business logic.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.shaping import Shaping

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
    """A finished answer. ``drop``: close the connection and send nothing (a lost response);
    ``shaping``: how it travels (trickled, padded, endless), None for all at once."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    shaping: Shaping | None = None


class RawNumber:
    """A JSON number written exactly as ``text`` (``0.000000000000000001``, ``NaN``, ``1e400``).

    Some MCE webhooks carry ``amount`` as a JSON number; a float could not say what the provider
    says (it rounds, and cannot hold 1e400), so the text goes out byte for byte. ``NaN`` and
    ``Infinity`` are not JSON at all, which is the point of the non-finite switch.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(payload: Any) -> bytes:
    """Compact JSON; :class:`RawNumber` values are written as bare number text."""
    raws: list[str] = []
    marker = f"@raw-{secrets.token_hex(6)}-"

    def default(value: Any) -> Any:
        if isinstance(value, RawNumber):
            raws.append(value.text)
            return f"{marker}{len(raws) - 1}@"
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    text = json.dumps(payload, separators=(",", ":"), default=default)
    for index, raw in enumerate(raws):
        text = text.replace(f'"{marker}{index}@"', raw, 1)
    return text.encode()


def json_response(payload: Any, status: int = 200) -> Response:
    """Plain JSON, used by the admin API (which is ours, not the provider's)."""
    return Response(status=status, body=dumps(payload))


def envelope(data: Mapping[str, Any], code: int | str = "200") -> Response:
    """The provider's success shape: ``{"code": "200", "msg": "success", "data": ...}``.

    The Create page types ``code`` as the string "200", v2 pages as the number 200: both occur.
    """
    return Response(status=200, body=dumps({"code": code, "msg": "success", "data": data}))


def seconds_value(seconds: float) -> int | float:
    """Whole seconds as an int (``3600``, ``Retry-After: 1``), fractions as a float (``0.3``)."""
    return int(seconds) if float(seconds).is_integer() else seconds
