"""Provider-shaped errors: RFC 7807 problem bodies with MCE's ``code`` and ``logId``.

Everything below the HTTP layer raises :class:`ProviderError`; exactly one function renders it, so
every error the sandbox emits has the same shape the client's error mapper must understand.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final

from sandbox.responses import HTML, PROBLEM_JSON, Response, dumps

INVALID_REQUEST: Final = "INVALID_REQUEST"
AUTH_INVALID_CLIENT: Final = "AUTH_INVALID_CLIENT"
AUTH_TOKEN_INVALID: Final = "AUTH_TOKEN_INVALID"  # noqa: S105 - an error code, not a secret
AUTH_TOKEN_EXPIRED: Final = "AUTH_TOKEN_EXPIRED"  # noqa: S105 - an error code, not a secret
CRYPTO_REFUND_NOT_PENDING: Final = "CRYPTO_REFUND_NOT_PENDING"
CRYPTO_REFUND_NOT_FOUND: Final = "CRYPTO_REFUND_NOT_FOUND"
CRYPTO_REFUND_ALREADY_CONFIRMED: Final = "CRYPTO_REFUND_ALREADY_CONFIRMED"
DUPLICATE_CLIENT_REFERENCE: Final = "DUPLICATE_CLIENT_REFERENCE"
IDEMPOTENCY_KEY_ALREADY_USED: Final = "IDEMPOTENCY_KEY_ALREADY_USED"
RATE_LIMITED: Final = "RATE_LIMITED"
REQUEST_IN_PROGRESS: Final = "REQUEST_IN_PROGRESS"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"
SERVICE_UNAVAILABLE: Final = "SERVICE_UNAVAILABLE"
NOT_FOUND: Final = "NOT_FOUND"
METHOD_NOT_ALLOWED: Final = "METHOD_NOT_ALLOWED"

#: A gateway in front of the provider answers 502 with a page, not JSON; clients must cope.
BAD_GATEWAY_HTML: Final = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

_TYPE_BASE: Final = "https://sandbox.mce.invalid/problems/"


class ProviderError(Exception):
    """A provider answer other than success, raised where the decision is made."""

    def __init__(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers: Mapping[str, str] = headers or {}


def new_log_id() -> str:
    """A fresh support trace id per response (16 hex chars), as MCE's ``logId``."""
    return f"{random.getrandbits(64):016x}"


def problem_response(error: ProviderError, instance: str) -> Response:
    """Render ``error`` as ``application/problem+json`` for the request path ``instance``."""
    body = {
        "type": _TYPE_BASE + error.code.lower().replace("_", "-"),
        "title": HTTPStatus(error.status).phrase,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        "code": error.code,
        "logId": new_log_id(),
    }
    return Response(
        status=error.status, body=dumps(body), content_type=PROBLEM_JSON, headers=error.headers
    )


def bad_gateway_response() -> Response:
    return Response(status=502, body=BAD_GATEWAY_HTML, content_type=HTML)


def invalid(detail: str) -> ProviderError:
    """Shorthand for the common 400; ``detail`` must name the offending field."""
    return ProviderError(400, INVALID_REQUEST, detail)
