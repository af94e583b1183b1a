"""The HTTP way in: intake for merchant apps in any language, MCE's webhook, operator actions.

A FastAPI (ASGI) app served by uvicorn (``refunds web``). Every route calls the same functions as
the Python API and the CLI (``Producer``, ``refunds.actions``, ``refunds.webhooks``), so the
HTTP API adds transport, never rules. Handlers are plain ``def`` functions: the ledger is
synchronous Redis, and Starlette runs them in its thread pool.

Security: merchant and operator routes need the ``X-API-Key`` header (``REFUNDS_API_KEY``),
compared in constant time. The webhook route is authenticated by MCE's signature instead, over the
raw bytes, before anything is parsed or stored. ``/healthz`` and ``/metrics`` are open (no data
beyond counts).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.settings import Settings
from refunds.actions import ACTIONS
from refunds.context import Context, build_context
from refunds.errors import (
    ConfigError,
    ConflictError,
    InvalidIntentError,
    NotDurableError,
    OperatorActionError,
    RefundNotFoundError,
    WebhookRejectedError,
)
from refunds.models import RefundIntent, State
from refunds.ops.metrics import render_metrics
from refunds.producer import Producer
from refunds.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, receive

SANDBOX_API_KEY = "sandbox-api-key"
PLACEHOLDER_KEYS = frozenset(
    {"", "changeme", "change-me", "placeholder", "secret", SANDBOX_API_KEY}
)


# --- response and request shapes (they make the OpenAPI description) ---------------------------


class HistoryItem(BaseModel):
    at: str | None
    from_: str | None = Field(alias="from")
    to: str
    reason: str
    actor: str


class RefundOut(BaseModel):
    """A refund record, as ``refunds status --json`` shows it."""

    clientReference: str  # noqa: N815 - the contract's field names
    state: State
    originalTransactionType: int  # noqa: N815
    originalTransactionId: str  # noqa: N815
    refundAddress: str | None  # noqa: N815
    cryptoRefundId: str | None  # noqa: N815
    providerStatus: int | None  # noqa: N815
    amount: str | None
    currency: str | None
    blockchain: str | None
    feeAmount: str | None  # noqa: N815
    feeCurrency: str | None  # noqa: N815
    txnHash: str | None  # noqa: N815
    attempts: int
    polls: int
    lastError: dict[str, Any] | None  # noqa: N815
    createdAt: str | None  # noqa: N815
    updatedAt: str | None  # noqa: N815
    history: list[HistoryItem]


class RefundPage(BaseModel):
    items: list[RefundOut]
    next: int | None = Field(description="Pass as `cursor` for the next page; null at the end.")
    total: int


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """Every error answer: a readable ``detail``, and per-field ``errors`` for 422."""

    detail: str
    errors: list[FieldProblem] = []


class ActionIn(BaseModel):
    by: str = Field(min_length=1, max_length=100, description="Who acts (goes into the history).")
    reason: str = Field(min_length=1, max_length=500, description="Why (goes into the history).")


class WebhookOut(BaseModel):
    outcome: str
    clientReference: str | None = None  # noqa: N815
    state: str | None = None


def _problem(status: int, detail: str, errors: list[dict[str, str]] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, "errors": errors or []})


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong X-API-Key"},
    422: {"model": Problem, "description": "Invalid input, one entry per bad field"},
}


# --- the app ------------------------------------------------------------------------------------


def api_key_of(settings: Settings) -> str:
    """The key callers must send; refuses to start without a real one outside the sandbox."""
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value()
        if settings.profile != "sandbox" and key.strip().lower() in PLACEHOLDER_KEYS:
            raise ConfigError("invalid configuration: REFUNDS_API_KEY is a placeholder value")
        return key
    if settings.profile == "sandbox":
        return SANDBOX_API_KEY
    raise ConfigError("invalid configuration: REFUNDS_API_KEY is not set (the web app needs it)")


def create_app(settings: Settings, pipeline: Context | None = None) -> FastAPI:  # noqa: PLR0915
    """The app; routes are declared here together so the API reads in one place."""
    api_key = api_key_of(settings)
    p = pipeline or build_context(settings)
    producer = Producer(settings, ledger=p.ledger)
    app = FastAPI(
        title="refund-pipeline",
        version="0.1.0",
        description="Submit and follow MCE crypto refunds; receive MCE's refund webhooks.",
    )

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101
        return _problem(exc.status_code, str(exc.detail))

    @app.exception_handler(RefundNotFoundError)
    def _not_found(_: Request, exc: Exception) -> JSONResponse:
        return _problem(404, str(exc))

    @app.exception_handler(NotDurableError)
    def _not_durable(_: Request, exc: Exception) -> JSONResponse:
        # Applied on the primary, not yet on enough replicas: the same request again is safe.
        response = _problem(503, str(exc))
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "message": str(e["msg"]),
            }
            for e in exc.errors()
        ]
        return _problem(422, "invalid request", errors)

    secured = [Depends(require_key)]
    intent_schema = RefundIntent.model_json_schema(by_alias=True)

    @app.post(
        "/refunds",
        dependencies=secured,
        status_code=201,
        response_model=RefundOut,
        responses={
            200: {"model": RefundOut, "description": "The existing identical intent"},
            409: {"model": Problem, "description": "Same reference, other content"},
            **ERRORS,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": intent_schema}},
            }
        },
        summary="Submit a refund intent (idempotent on clientReference)",
    )
    async def submit(request: Request) -> Any:
        try:
            data = await request.json()
        except ValueError:
            return _problem(
                422, "body is not valid JSON", [{"field": "body", "message": "not valid JSON"}]
            )
        try:
            intent = RefundIntent.parse(data)
        except InvalidIntentError as exc:
            return _problem(
                422,
                "invalid refund intent",
                [{"field": e.field, "message": e.message} for e in exc.errors],
            )
        try:
            result = await run_in_threadpool(producer.submit_intent, intent)
        except ConflictError as exc:
            return _problem(
                409,
                str(exc),
                [
                    {"field": f, "message": "differs from the existing intent"}
                    for f in exc.differences
                ],
            )
        return JSONResponse(
            status_code=201 if result.created else 200, content=result.record.to_public()
        )

    @app.get(
        "/refunds/{client_reference}",
        dependencies=secured,
        response_model=RefundOut,
        responses={404: {"model": Problem}, **ERRORS},
        summary="One refund",
    )
    def get_refund(client_reference: str) -> Any:
        return p.ledger.get(client_reference).to_public()

    @app.get(
        "/refunds",
        dependencies=secured,
        response_model=RefundPage,
        responses=ERRORS,
        summary="Refunds, oldest first, optionally in one state (paged)",
    )
    def list_refunds(
        state: State | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> Any:
        refs = p.ledger.references(state)
        page = refs[cursor : cursor + limit]
        nxt = cursor + limit if cursor + limit < len(refs) else None
        return {
            "items": [r.to_public() for r in p.ledger.get_many(page)],
            "next": nxt,
            "total": len(refs),
        }

    def action_route(name: str) -> None:
        action = ACTIONS[name]

        def act(client_reference: str, body: ActionIn) -> Any:
            try:
                result = action(
                    p.ledger, settings, client_reference, actor=body.by, reason=body.reason
                )
            except OperatorActionError as exc:
                return _problem(409, str(exc))
            if result.next_task is not None:
                producer.celery.send_task(f"refunds.{result.next_task}", args=[client_reference])
            return result.record.to_public()

        app.post(
            f"/refunds/{{client_reference}}/{name}",
            dependencies=secured,
            response_model=RefundOut,
            name=f"{name}_refund",
            responses={
                404: {"model": Problem},
                409: {"model": Problem, "description": "Not possible in its state"},
                **ERRORS,
            },
            summary=f"Operator action: {name} (recorded with who and why)",
        )(act)

    for name in ACTIONS:
        action_route(name)

    @app.post(
        "/webhooks/mce",
        response_model=WebhookOut,
        responses={
            202: {"model": WebhookOut, "description": "Kept for a refund not known yet"},
            400: {"model": Problem},
            401: {"model": Problem},
            413: {"model": Problem},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        summary="MCE's Crypto Refund Webhook (signed: X-MCE-Timestamp, X-MCE-Signature)",
    )
    async def webhook(request: Request) -> Any:
        limit = settings.webhook_max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _problem(413, f"body larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _problem(413, f"body larger than {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            result = await run_in_threadpool(
                receive,
                p,
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
            )
        except WebhookRejectedError as exc:
            p.stats.record_webhook(f"rejected_{exc.status}")
            return _problem(exc.status, exc.reason)
        if result.next_task is not None and result.client_reference:
            producer.celery.send_task(f"refunds.{result.next_task}", args=[result.client_reference])
        return JSONResponse(
            status_code=result.http_status,
            content={
                "outcome": result.outcome,
                "clientReference": result.client_reference,
                "state": result.state,
            },
        )

    @app.get("/healthz", responses={503: {"model": Problem}}, summary="Liveness: Redis answers")
    def healthz() -> Any:
        try:
            p.ledger.redis.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            return _problem(503, f"redis: {type(exc).__name__}")
        return {"ok": True}

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    def metrics() -> Response:
        body, content_type = render_metrics(p)
        return Response(content=body, media_type=content_type)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory refunds.web.app:app_from_env``."""
    from config.settings import get_settings  # noqa: PLC0415

    return create_app(get_settings())
