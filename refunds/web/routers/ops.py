"""Operations: liveness and Prometheus metrics. Open (no API key): counts only, no records."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from refunds.ops.metrics import render_metrics
from refunds.web.deps import ContextDep
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


@router.get(
    "/metrics", response_class=Response, responses=UNAVAILABLE, summary="Prometheus metrics"
)
def metrics(context: ContextDep) -> Response:
    body, content_type = render_metrics(context)
    return Response(content=body, media_type=content_type)
