"""Helpers of the provider-news step tests (issue 10): drive the steps as worker and timer would,
deliver a signed webhook in-process, read what the sandbox received."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps, webhooks
from refunds.context import Context
from refunds.decisions import STEP_FOR_STATE
from refunds.models import RefundRecord
from refunds.signing import sign
from refunds.steps import NextTask


def drive(ctx: Context, ref: str, seconds: float, first: NextTask = "create") -> RefundRecord:
    """Run the steps for ``ref`` as a worker and the timer would, for at most ``seconds``: a
    step's nudge runs at once (the worker), otherwise the step for the record's state runs after
    0.1 s (the timer, much faster than its real schedule, so a loop would show)."""
    deadline = time.monotonic() + seconds
    task: NextTask | None = first
    while time.monotonic() < deadline:
        if task is None:
            time.sleep(0.1)
            record = ctx.ledger.get(ref)
            if record.is_final or record.state not in STEP_FOR_STATE:
                return record
            task = STEP_FOR_STATE[record.state]
        task = steps.STEPS[task](ctx, ref).next_task
    return ctx.ledger.get(ref)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def deliver(ctx: Context, nid: str, data: dict[str, Any]) -> webhooks.WebhookResult:
    """A refund webhook with ``data``, signed as MCE signs it, through ``webhooks.receive``."""
    body = json.dumps(
        {"notificationId": nid, "eventType": "crypto.refund.updated", "data": data},
        default=_json_default,
    ).encode()
    stamp = str(time.time_ns() // 1_000_000)
    secret = ctx.settings.webhook_secret.get_secret_value()
    return webhooks.receive(ctx, body, f"t={stamp},v0={sign(secret, stamp, body)}")


def provider_view(ctx: Context, refund_id: str) -> dict[str, Any]:
    """The refund as the sandbox's Get answers it now (the body a webhook would carry)."""
    return ctx.client.get(crypto_refund_id=refund_id).model_dump(by_alias=True, exclude_none=True)


def requests_sent(sandbox: SandboxAdmin, operation: str) -> list[dict[str, Any]]:
    """The requests of ``operation`` the sandbox received since its reset, oldest first."""
    answer = sandbox.http.get(
        sandbox.url + "/sandbox/requests", params={"operation": operation}, timeout=5
    )
    answer.raise_for_status()
    found: list[dict[str, Any]] = answer.json()["requests"].get(operation, [])
    return found
