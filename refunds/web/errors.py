"""Every error answer of the HTTP API has one shape: ``{"detail": str, "errors": [...]}``."""

from __future__ import annotations

import contextlib
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
from refunds.store.epoch import watch, write_probe

# Seconds a client should wait when Redis is unreachable: a restart or a failover takes about this.
RETRY_AFTER_SECONDS = 5

# Redis (the ledger) or the broker cannot be reached, does not answer in time, or refuses the
# command (out of memory under ``noeviction``, read-only replica, a busy script, any other Redis
# error): nothing was decided, so the client retries. Intake is idempotent on clientReference, so
# a retry after a half-done submit is safe. NotDurableError is not a Redis error (its own handler).
# The SQL archive down (a read or an intake of an archived reference) is the same kind of answer.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError,
    OperationalError,
    SqlOperationalError,
    ArchiveUnavailableError,
)

log = logging.getLogger("refunds.web")


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


def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After instead of a 500 text page; the reason class only (no URL, no host).

    Logged at WARNING with the class and the route (a person sees Redis trouble in the web log,
    and ``/healthz`` turns red for it); the message is not logged, since a Redis error's text
    can quote a command's arguments."""
    name = type(exc).__name__
    log.warning("storage unavailable (%s) on %s", name, request.url.path, extra={"error": name})
    return unavailable(f"storage unavailable ({name}), retry later")


def ledger_reset(_: Request, exc: Exception) -> JSONResponse:
    """Redis lost the ledger and no operator has acknowledged it (``refunds.store.epoch``):
    nothing was written; the caller retries after the acknowledgement."""
    return unavailable(str(exc))


def require_ledger_intact(request: Request) -> None:
    """A route dependency: raise LedgerResetError (answered 503) while a reset is recorded.

    MCE's webhook uses it: an event for a refund the lost ledger held would otherwise be parked
    as "early" for a refund that will never come; answered 503, it is not stored, and MCE
    delivers it again (for hours) until the reset is acknowledged, then it applies or parks as
    usual and reconciliation sees the rest."""
    ledger = request.app.state.services.context.ledger
    watch(ledger.redis, "web").require_intact()


def first_epoch_check(client: redis.Redis) -> None:
    """At start, learn (or write) the ledger's epoch, so an empty restart before the first
    request is already a change; a Redis away at start is for the first request to meet."""
    with contextlib.suppress(redis.RedisError):
        watch(client, "web").check()


def storage_problem(client: redis.Redis) -> str | None:
    """Why ``/healthz`` is red beyond an unreachable Redis: a recorded ledger reset, or Redis
    refusing a write (out of memory, read-only), which a PING would not show. Raises
    redis.RedisError for a Redis that cannot answer at all."""
    reset = watch(client, "web").check()
    if reset is not None:
        return reset.describe()
    try:
        write_probe(client)
    except redis.ResponseError as exc:
        return f"redis refuses writes ({type(exc).__name__})"
    return None


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
