"""Operators: approve, retry or cancel a refund, recorded with who and why.

The same functions as ``refunds approve|retry|cancel`` (``refunds.actions``): HTTP adds transport
and the operator credential. Every route here needs an operator key in ``X-API-Key``
(``refunds.web.deps.operator_name``): the intake key gets 403, and who acted (the history's actor,
``approvedBy``) is the name that key is configured under, never a name the caller types.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from refunds.actions import ACTIONS
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
        try:
            result = action(
                context.ledger, settings, client_reference, actor=operator, reason=body.reason
            )
        except OperatorActionError as exc:
            return problem(409, str(exc))
        if result.next_task is not None:
            producer.celery.send_task(f"refunds.{result.next_task}", args=[client_reference])
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


for _name in ACTIONS:
    _route(_name)
