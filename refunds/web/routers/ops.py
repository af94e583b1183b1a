"""Operations: liveness and Prometheus metrics: counts only, no records.

``/metrics`` is open unless ``REFUNDS_METRICS_TOKEN`` is set; then it answers 401 without
``Authorization: Bearer <that token>`` (compared in constant time), so a scraper outside the
private network needs the token. ``/healthz`` stays open (load balancers probe it).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Response

from refunds.ops.metrics import render_metrics
from refunds.web.deps import ContextDep, SettingsDep
from refunds.web.errors import storage_problem, unavailable
from refunds.web.schemas import UNAVAILABLE

router = APIRouter()


@router.get(
    "/healthz",
    responses=UNAVAILABLE,
    summary="Health: Redis answers, takes writes, and still holds the ledger (its epoch)",
)
def healthz(context: ContextDep) -> Any:
    try:
        context.ledger.ping()
        problem = storage_problem(context.ledger.redis)
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return unavailable(f"redis: {type(exc).__name__}")
    if problem is not None:
        return unavailable(problem)
    return {"ok": True}


def _check_metrics_token(settings: SettingsDep, authorization: str | None) -> None:
    token = settings.metrics_token
    if token is None:
        return
    scheme, _, sent = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        sent.strip().encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token (REFUNDS_METRICS_TOKEN is set)",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        401: {"description": "REFUNDS_METRICS_TOKEN is set: bearer token missing or wrong"},
        **UNAVAILABLE,
    },
    summary="Prometheus metrics (a bearer token when REFUNDS_METRICS_TOKEN is set)",
)
def metrics(
    context: ContextDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    _check_metrics_token(settings, authorization)
    body, content_type = render_metrics(context)
    return Response(content=body, media_type=content_type)
