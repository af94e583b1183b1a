"""Every error answer of the HTTP API has one shape: ``{"detail": str, "errors": [...]}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from sqlalchemy.exc import OperationalError as SqlOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from refunds.errors import ArchiveUnavailableError

# Seconds a client should wait when Redis is unreachable: a restart or a failover takes about this.
RETRY_AFTER_SECONDS = 5

# Redis (the ledger) or the broker cannot be reached: nothing was decided, so the client retries.
# Intake is idempotent on clientReference, so a retry after a half-done submit is safe.
# The SQL archive down (a read or an intake of an archived reference) is the same kind of answer.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
    SqlOperationalError,
    ArchiveUnavailableError,
)


def problem(
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"detail": detail, "errors": errors or []},
        headers=dict(headers) if headers else None,
    )


def unavailable(detail: str = "storage unavailable, retry later") -> JSONResponse:
    return problem(503, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


def not_found(_: Request, exc: Exception) -> JSONResponse:
    return problem(404, str(exc))


def invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
            "message": str(e["msg"]),
        }
        for e in exc.errors()
    ]
    return problem(422, "invalid request", errors)


def redis_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After instead of a 500 text page; the reason class only (no URL, no host)."""
    return unavailable(f"storage unavailable ({type(exc).__name__}), retry later")


def not_durable(_: Request, exc: Exception) -> JSONResponse:
    """Applied on the primary, not yet on enough replicas: the same request again is safe."""
    return problem(503, str(exc), headers={"Retry-After": "1"})


def client_gone(request: Request, _: Exception) -> JSONResponse:
    """The client went away (or was cut off by the read deadline) before its body arrived.

    Nothing was read, so nothing was done: one line, no traceback. The answer goes nowhere.
    """
    logging.getLogger("refunds.web").info(
        "client left before its request was read", extra={"operation": request.url.path}
    )
    return problem(400, "request body incomplete")
