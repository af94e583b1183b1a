"""Operators: approve, retry or cancel a refund, recorded with who and why; retry in bulk.

The same functions as ``refunds approve|retry|cancel`` and ``refunds retry --state ...``
(``refunds.actions``): HTTP adds transport and the operator credential. Every route here needs an
operator key in ``X-API-Key`` (``refunds.web.deps.operator_name``): the intake key gets 403, and
who acted (the history's actor, ``approvedBy``) is the name that key is configured under, never a
name the caller types.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from refunds.actions import ACTIONS, retry_many, select_for_retry
from refunds.conflicts import acknowledge
from refunds.errors import OperatorActionError
from refunds.models import PublicRefund
from refunds.web.deps import ContextDep, OperatorDep, ProducerDep, SettingsDep
from refunds.web.errors import problem
from refunds.web.schemas import JSON_BODY, OPERATOR, ActionIn, Problem
from refunds.web.transport import JsonBodyRoute

router = APIRouter(route_class=JsonBodyRoute)


def _route(name: str) -> None:
    action = ACTIONS[name]

    def act(  # noqa: PLR0917 - FastAPI passes dependencies by keyword; this is its signature
        client_reference: str,
        body: ActionIn,
        operator: OperatorDep,
        settings: SettingsDep,
        context: ContextDep,
        producer: ProducerDep,
    ) -> Any:
        # Cancel asks MCE first (refunds.before_cancel): with this process's client.
        more: dict[str, Any] = {"provider": context.client} if name == "cancel" else {}
        try:
            result = action(
                context.ledger,
                settings,
                client_reference,
                actor=operator,
                reason=body.reason,
                **more,
            )
        except OperatorActionError as exc:
            return problem(409, str(exc))
        if result.next_task is not None:
            producer.nudge(client_reference, result.next_task, result.fence)
        return PublicRefund.of(result.record)

    router.post(
        f"/refunds/{{client_reference}}/{name}",
        response_model=PublicRefund,
        name=f"{name}_refund",
        responses={
            404: {"model": Problem},
            409: {"model": Problem, "description": "Not possible in its state"},
            **JSON_BODY,
            **OPERATOR,
        },
        summary=f"Operator action: {name} (operator key; recorded with who and why)",
    )(act)


#: The bulk retry's path, outside ``/refunds/{client_reference}/...``: no reference, and no path a
#: client normalizes (``/refunds/./retry`` is sent as ``/refunds/retry``), can reach it.
BULK_RETRY_PATH = "/operator/retry"
#: Where it was until then: answers 410 naming the new path, and retries nothing.
OLD_BULK_RETRY_PATH = "/refunds/retry"


class BulkRetryIn(BaseModel):
    """``POST /operator/retry``: the filters of ``refunds retry --state ...``, who and why."""

    state: Literal["needs_attention"] = "needs_attention"
    code: str | None = Field(None, max_length=100, description="Only refunds stopped with it.")
    since: datetime | None = Field(None, description="Only refunds stopped since (ISO 8601).")
    dryRun: bool = False  # noqa: N815 - the API's camelCase
    by: str | None = Field(
        None, max_length=100, description="Ignored: who acted is the operator key's name."
    )
    reason: str = Field(min_length=1, max_length=500, description="Why (goes into the history).")


class BulkRetryOut(BaseModel):
    dryRun: bool  # noqa: N815
    retried: int
    skipped: int
    references: list[str]
    skippedReasons: dict[str, str]  # noqa: N815


@router.post(
    OLD_BULK_RETRY_PATH,
    status_code=410,
    name="retry_refunds_moved",
    deprecated=True,
    responses={
        410: {"model": Problem, "description": "Moved: use POST /operator/retry"},
        **JSON_BODY,
    },
    summary="Gone: the bulk retry is POST /operator/retry (this path retries nothing)",
)
def retry_bulk_moved() -> Any:
    # Kept answering so an old client learns where the bulk retry went, and so that a path a
    # client normalized from ``/refunds/./retry`` or ``/refunds/../retry`` never retries anything.
    return problem(
        410,
        f"the bulk retry moved to POST {BULK_RETRY_PATH}; POST {OLD_BULK_RETRY_PATH} retries "
        "nothing (a single refund's retry is POST /refunds/{clientReference}/retry)",
    )


@router.post(
    BULK_RETRY_PATH,
    response_model=BulkRetryOut,
    name="retry_refunds",
    responses={**JSON_BODY, **OPERATOR},
    summary="Operator action: retry every refund in needs_attention matching the filters",
)
def retry_bulk(
    body: BulkRetryIn,
    operator: OperatorDep,
    settings: SettingsDep,
    context: ContextDep,
    producer: ProducerDep,
) -> Any:
    since = None
    if body.since is not None:
        moment = body.since if body.since.tzinfo else body.since.replace(tzinfo=UTC)
        since = moment.timestamp()
    try:
        records = select_for_retry(context.ledger, state=body.state, code=body.code, since=since)
        report = retry_many(
            context.ledger,
            settings,
            records,
            actor=operator,
            reason=body.reason,
            code=body.code,
            dry_run=body.dryRun,
        )
    except OperatorActionError as exc:
        return problem(422, exc.why)
    for ref, next_task in report.retried.items():
        if next_task is not None and not report.dry_run:
            producer.nudge(ref, next_task, report.fences.get(ref))
    return report.to_public()


for _name in ACTIONS:
    _route(_name)


@router.post(
    "/refunds/{client_reference}/conflict/ack",
    response_model=PublicRefund,
    name="acknowledge_conflict",
    responses={
        404: {"model": Problem},
        409: {"model": Problem, "description": "No conflict to acknowledge"},
        **JSON_BODY,
        **OPERATOR,
    },
    summary="Operator action: acknowledge a refund's contradiction (health turns green)",
)
def acknowledge_conflict(
    client_reference: str, body: ActionIn, operator: OperatorDep, context: ContextDep
) -> Any:
    try:
        record = acknowledge(context.ledger, client_reference, actor=operator, reason=body.reason)
    except OperatorActionError as exc:
        return problem(409, str(exc))
    return PublicRefund.of(record)
