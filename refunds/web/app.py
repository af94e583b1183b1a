"""The HTTP way in: intake for merchant apps in any language, MCE's webhook, operator actions.

A FastAPI (ASGI) app served by uvicorn (``refunds web``). This module only wires it: the services
(``deps.Services``), the routers (``routers/``: intake, operator, mce_webhook, ops), the body
limit and the error handlers. Every route calls the same functions as the Python API and the CLI
(``Producer``, ``refunds.actions``, ``refunds.webhooks``), so the HTTP API adds transport, never
rules. Handlers that touch Redis are plain ``def`` or hand the work to the thread pool: the ledger
is synchronous Redis.

Security: merchant and operator routes need the ``X-API-Key`` header (``REFUNDS_API_KEY``),
compared in constant time. The webhook route is authenticated by MCE's signature instead, over the
raw bytes, before anything is parsed or stored. ``/`` (where to go), the API reference
(``/docs``, ``/redoc``, ``/openapi.json``, assets served by the app), ``/healthz`` and ``/metrics``
are open (no data beyond counts).

Answers every route may give: 413 for a body above ``REFUNDS_MAX_BODY_BYTES``, 503 with
``Retry-After`` while Redis (or the broker) cannot be reached, and all errors as
``{"detail": str, "errors": [{"field", "message"}]}``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from config.settings import Settings
from refunds.context import Context, build_context
from refunds.errors import LedgerResetError, NotDurableError, RefundNotFoundError
from refunds.producer import Producer
from refunds.web import console, errors
from refunds.web.deps import (
    PLACEHOLDER_KEYS,
    SANDBOX_API_KEY,
    Services,
    api_key_of,
    operator_keys_of,
    scoped_keys_of,
)
from refunds.web.routers import exports, home, intake, mce_webhook, operator, ops
from refunds.web.transport import BodyLimitMiddleware

__all__ = ["SANDBOX_API_KEY", "api_key_of", "app_from_env", "create_app"]


def create_app(settings: Settings, context: Context | None = None) -> FastAPI:
    """The app for ``settings``; raises ConfigError (before serving) without a real API key."""
    api_key = api_key_of(settings)
    operator_keys = operator_keys_of(settings, api_key)
    ctx = context or build_context(settings)
    _ = ctx.kyt  # the KYT rules file validated at start (ConfigError listing every problem)
    # /docs and /redoc with their scripts served by the app itself (no CDN: they work offline);
    # no validator badge, which would call out to swagger.io.
    app = FastAPIOffline(
        title="refund-pipeline",
        version="0.1.0",
        description="Submit and follow MCE crypto refunds; receive MCE's refund webhooks.",
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.services = Services(
        settings=settings,
        context=ctx,
        producer=Producer(settings, ledger=ctx.ledger),
        api_key=api_key,
        operator_keys=operator_keys,
        scoped_keys=scoped_keys_of(settings, api_key, operator_keys),
    )
    for router in (
        home.router,
        intake.router,
        operator.router,
        exports.router,
        mce_webhook.router,
        ops.router,
    ):
        app.include_router(router)
    console.install(  # the operator console at /console (refunds/web/console)
        app,
        settings,
        intake_key=api_key,
        operator_keys=operator_keys,
        placeholder_keys=frozenset(PLACEHOLDER_KEYS),
    )
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_exception_handler(StarletteHTTPException, errors.http_error)
    app.add_exception_handler(RefundNotFoundError, errors.not_found)
    app.add_exception_handler(NotDurableError, errors.not_durable)
    app.add_exception_handler(LedgerResetError, errors.ledger_reset)
    app.add_exception_handler(RequestValidationError, errors.invalid)
    app.add_exception_handler(ClientDisconnect, errors.client_gone)
    for unavailable in errors.UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, errors.redis_unavailable)
    errors.first_epoch_check(ctx.ledger.redis)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory refunds.web.app:app_from_env``."""
    from config.settings import get_settings  # noqa: PLC0415

    return create_app(get_settings())
