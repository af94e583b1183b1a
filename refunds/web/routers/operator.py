"""Operators: approve, retry or cancel a refund, recorded with who and why.

The same functions as ``refunds approve|retry|cancel`` (``refunds.actions``): HTTP adds transport.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from refunds.actions import ACTIONS
from refunds.errors import OperatorActionError
from refunds.models import PublicRefund
from refunds.web.deps import SECURED, ContextDep, ProducerDep, SettingsDep
from refunds.web.errors import problem
from refunds.web.schemas import JSON_BODY, ActionIn, Problem
from refunds.web.schemas import SECURED as SECURED_ERRORS
from refunds.web.transport import JsonBodyRoute

router = APIRouter(route_class=JsonBodyRoute, dependencies=SECURED)


def _route(name: str) -> None:
    action = ACTIONS[name]

    def act(
        client_reference: str,
        body: ActionIn,
        settings: SettingsDep,
        context: ContextDep,
        producer: ProducerDep,
    ) -> Any:
        try:
            result = action(
                context.ledger, settings, client_reference, actor=body.by, reason=body.reason
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
            **SECURED_ERRORS,
        },
        summary=f"Operator action: {name} (recorded with who and why)",
    )(act)


for _name in ACTIONS:
    _route(_name)
