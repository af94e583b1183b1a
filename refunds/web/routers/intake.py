"""Merchant apps: submit a refund intent, read one, list them (``/refunds``)."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from refunds.archive.reads import RefundFilter, window_edge
from refunds.batch import DuplicateKeyError, unique_keys
from refunds.errors import ConflictError, InvalidIntentError, RefundNotFoundError
from refunds.models import PublicRefund, RefundIntent, RefundRecord, State
from refunds.participants.registry import CODE_PATTERN, Registry
from refunds.web.deps import SECURED, ContextDep, ProducerDep, Scope, ScopeDep
from refunds.web.errors import problem
from refunds.web.schemas import JSON_BODY, Problem, RefundPage
from refunds.web.schemas import SECURED as SECURED_ERRORS
from refunds.web.transport import JsonBodyRoute

router = APIRouter(route_class=JsonBodyRoute, dependencies=SECURED)


@router.post(
    "/refunds",
    status_code=201,
    response_model=PublicRefund,
    responses={
        200: {"model": PublicRefund, "description": "The existing identical intent"},
        409: {
            "model": Problem,
            "description": "Same reference, other content; or the payment is already refunded "
            "under another reference (named)",
        },
        403: {"model": Problem, "description": "A participant this key may not submit for"},
        **JSON_BODY,
        **SECURED_ERRORS,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": RefundIntent.model_json_schema(by_alias=True)}
            },
        }
    },
    summary="Submit a refund intent (idempotent on clientReference)",
)
async def submit(
    request: Request, response: Response, producer: ProducerDep, scope: ScopeDep
) -> Any:
    # The body is read by hand (not a pydantic parameter) so that every bad field is reported
    # with the intent's own messages, the same as the CLI's and submit_refund's.
    try:
        data = json.loads(await request.body(), object_pairs_hook=unique_keys)
    except DuplicateKeyError as exc:
        return problem(
            422, "invalid refund intent", [{"field": str(exc), "message": "appears twice"}]
        )
    except (ValueError, UnicodeDecodeError):
        return problem(
            422, "body is not valid JSON", [{"field": "body", "message": "not valid JSON"}]
        )
    try:
        intent = RefundIntent.parse(data)
        producer.check_participant(intent)  # in the registry (REFUNDS_REGISTRY_FILE), enabled
    except InvalidIntentError as exc:
        return problem(
            422,
            "invalid refund intent",
            [{"field": e.field, "message": e.message} for e in exc.errors],
        )
    owner = producer.registry.owner(intent.participant)
    if scope is not None and owner not in scope:
        return problem(
            403,
            f"this key may not submit refunds for participant {owner}",
            [{"field": "participantCode", "message": "not one of this key's participants"}],
        )
    try:
        result = await run_in_threadpool(producer.submit_intent, intent)
    except ConflictError as exc:
        return problem(
            409,
            str(exc),
            [{"field": f, "message": exc.field_message} for f in exc.differences],
        )
    response.status_code = 201 if result.created else 200
    return PublicRefund.of(result.record)


@router.get(
    "/refunds/{client_reference}",
    response_model=PublicRefund,
    responses={404: {"model": Problem}, **SECURED_ERRORS},
    summary="One refund",
)
def get_refund(
    client_reference: str, context: ContextDep, producer: ProducerDep, scope: ScopeDep
) -> Any:
    record = context.refunds.get(client_reference)  # from Redis or the archive
    if not _visible(record, producer.registry, scope, None):
        raise RefundNotFoundError(client_reference)  # another participant's: as if none
    return PublicRefund.of(record)


def _visible(
    record: RefundRecord, registry: Registry, scope: Scope, participant: str | None
) -> bool:
    """Whether a key of ``scope`` asking for ``participant`` (None: any) sees ``record``."""
    owner = registry.owner(record.participant)
    if scope is not None and owner not in scope:
        return False
    return participant is None or owner == participant


@router.get(
    "/refunds",
    response_model=RefundPage,
    responses=SECURED_ERRORS,
    summary="Refunds, oldest first, optionally in one state (paged)",
)
def list_refunds(
    context: ContextDep,
    producer: ProducerDep,
    scope: ScopeDep,
    *,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[int, Query(ge=0, le=10**9)] = 0,
    conflicts: bool = False,
    created_from: Annotated[datetime | None, Query(alias="createdFrom")] = None,
    created_to: Annotated[datetime | None, Query(alias="createdTo")] = None,
    currency: Annotated[str | None, Query(min_length=1, max_length=16)] = None,
    amount_min: Annotated[
        Decimal | None, Query(alias="amountMin", ge=0, allow_inf_nan=False, max_digits=38)
    ] = None,
    amount_max: Annotated[
        Decimal | None, Query(alias="amountMax", ge=0, allow_inf_nan=False, max_digits=38)
    ] = None,
    participant: Annotated[str | None, Query(pattern=CODE_PATTERN)] = None,
) -> Any:
    """Oldest first; ``createdFrom``/``createdTo`` are a half-open window (ISO 8601, UTC when
    no offset is given); amounts are inclusive. Answers from Redis and the archive alike, except
    a participant's (or a participant-scoped key's) list, which reads the refunds still in Redis
    (no participant index in the archive yet)."""
    if not conflicts and scope is None and participant is None:
        wanted = RefundFilter(
            state=state,
            created_from=window_edge(created_from),
            created_to=window_edge(created_to),
            currency=currency,
            amount_min=amount_min,
            amount_max=amount_max,
        )
        found = context.refunds.page(wanted, limit, cursor)
        return RefundPage(
            items=[PublicRefund.of(r) for r in found.items], next=found.next, total=found.total
        )
    refs = context.ledger.references(state)
    if conflicts:  # only refunds whose provider news contradicted a final state
        marked = set(context.ledger.conflicted())
        refs = [r for r in refs if r in marked]
    if scope is None and participant is None:
        total = len(refs)
        items = context.ledger.get_many(refs[cursor : cursor + limit])
    else:
        # One participant's (or a scoped key's) refunds: read, then filtered (no index yet); the
        # page comes from the records already read.
        visible = [
            r
            for r in context.ledger.get_many(refs)
            if _visible(r, producer.registry, scope, participant)
        ]
        total, items = len(visible), visible[cursor : cursor + limit]
    nxt = cursor + limit if cursor + limit < total else None
    return RefundPage(items=[PublicRefund.of(r) for r in items], next=nxt, total=total)

