"""MCE's Crypto Refund Webhook (``POST /webhooks/mce``): a thin pass-through.

The raw body and the whole header mapping go to ``refunds.webhooks``, which owns verification
(which headers, which scheme), storage and applying; a change of MCE's signature headers is
therefore local to that module. No API key here: the signature is the authentication. The body
limit is the app's (``REFUNDS_MAX_BODY_BYTES``, see ``refunds.web.transport``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from refunds.errors import WebhookRejectedError
from refunds.producer import Producer
from refunds.web.deps import ContextDep, ProducerDep
from refunds.web.errors import problem, require_ledger_intact
from refunds.web.schemas import BODY, UNAVAILABLE, Problem, WebhookOut
from refunds.webhooks import receive_delivery
from refunds.webhooks.credentials import receive_for_credential
from refunds.webhooks.event import WebhookResult

router = APIRouter()


@router.post(
    "/webhooks/mce",
    response_model=WebhookOut,
    responses={
        202: {"model": WebhookOut, "description": "Kept for a refund not known yet"},
        400: {"model": Problem},
        401: {"model": Problem},
        **BODY,
        **UNAVAILABLE,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
    summary="MCE's Crypto Refund Webhook (signed; verified over the raw body)",
    # 503 while Redis is known to have lost the ledger: MCE redelivers after the acknowledgement.
    dependencies=[Depends(require_ledger_intact)],
)
async def webhook(request: Request, context: ContextDep, producer: ProducerDep) -> Any:
    body = await request.body()
    try:
        result = await run_in_threadpool(receive_delivery, context, body, request.headers)
    except WebhookRejectedError as exc:
        context.stats.record_webhook(f"rejected_{exc.status}")
        return problem(exc.status, exc.reason)
    return _answer(result, producer)


@router.post(
    "/webhooks/mce/{credential}",
    response_model=WebhookOut,
    responses={
        202: {"model": WebhookOut, "description": "Kept for a refund not known yet"},
        400: {"model": Problem},
        401: {"model": Problem},
        403: {"model": Problem, "description": "A participantCode of another credential"},
        404: {"model": Problem, "description": "No such credential in the registry"},
        **BODY,
        **UNAVAILABLE,
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
    summary="One credential's MCE webhooks in a PSP deployment (signed with its secrets)",
    dependencies=[Depends(require_ledger_intact)],
)
async def credential_webhook(
    request: Request,
    credential: Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")],
    context: ContextDep,
    producer: ProducerDep,
) -> Any:
    body = await request.body()
    try:
        result = await run_in_threadpool(
            receive_for_credential, context, credential, body, request.headers
        )
    except WebhookRejectedError as exc:
        context.stats.record_webhook(f"rejected_{exc.status}")
        return problem(exc.status, exc.reason)
    return _answer(result, producer)


def _answer(result: WebhookResult, producer: Producer) -> JSONResponse:
    """Nudge the refund's next step, if any, and answer MCE."""
    if result.next_task is not None and result.client_reference:
        producer.nudge(result.client_reference, result.next_task)
    return JSONResponse(
        status_code=result.http_status,
        content={
            "outcome": result.outcome,
            "clientReference": result.client_reference,
            "state": result.state,
        },
    )
