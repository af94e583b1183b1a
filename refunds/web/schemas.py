"""Request and response shapes of the HTTP API (they make the OpenAPI description).

The refund itself is ``refunds.models.PublicRefund``, the one public record shape shared with the
CLI; this module holds only what is particular to HTTP: pages, problems, action bodies.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from refunds.models import PublicRefund


class RefundPage(BaseModel):
    items: list[PublicRefund]
    next: int | None = Field(description="Pass as `cursor` for the next page; null at the end.")
    total: int


class FieldProblem(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """Every error answer: a readable ``detail``, and per-field ``errors`` for 409 and 422."""

    detail: str
    errors: list[FieldProblem] = []


class ActionIn(BaseModel):
    by: str | None = Field(
        None,
        max_length=100,
        description="Ignored: who acts is the operator named by the X-API-Key credential "
        "(REFUNDS_OPERATOR_KEYS); accepted so older clients still validate.",
    )
    reason: str = Field(min_length=1, max_length=500, description="Why (goes into the history).")


class WebhookOut(BaseModel):
    outcome: str
    clientReference: str | None = None  # noqa: N815 - the contract's field names
    state: str | None = None


UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "Redis unavailable; retry after `Retry-After` seconds"},
}
BODY: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "Body larger than REFUNDS_MAX_BODY_BYTES"},
}
JSON_BODY: dict[int | str, dict[str, Any]] = {
    **BODY,
    415: {"model": Problem, "description": "Content-Type is not application/json"},
}
OPERATOR: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown X-API-Key"},
    403: {
        "model": Problem,
        "description": "The intake key, or no operator credential configured",
    },
    422: {"model": Problem, "description": "Invalid input, one entry per bad field"},
    503: {"model": Problem, "description": "Redis unavailable; retry after `Retry-After` seconds"},
}
SECURED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong X-API-Key"},
    422: {"model": Problem, "description": "Invalid input, one entry per bad field"},
    **UNAVAILABLE,
}
