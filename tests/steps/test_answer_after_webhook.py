"""A step's own answer is compared with the record even when a webhook wrote first.

A webhook may adopt a refund id while Create is in flight. Create's answer then meets a record
that moved: it is read again and decided against the record as it now is, so an answer that
names another refund stops the refund for a human instead of being dropped as "superseded".
"""

from __future__ import annotations

import threading
import time

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.context import Context
from refunds.decisions import PROVIDER_MISMATCH
from refunds.models import State
from refunds.steps import StepResult
from tests.steps.conftest import make_context, received
from tests.steps.news_helpers import deliver


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    return make_context(redis_db, sandbox, confirm_inline=False)


def create_while_a_webhook_lands(
    ctx: Context, sandbox: SandboxAdmin, ref: str, refund_id: str | None
) -> tuple[StepResult, str]:
    """Run Create for ``ref`` while its answer is delayed 0.8 s; 0.3 s in, a webhook for ``ref``
    (status 1, naming ``refund_id``, or the id Create made when None) is applied. Answers the
    step's result and the id Create's answer named."""
    received(ctx, sandbox, ref)
    sandbox.configure(slow_rate=1.0, slow_ms=800, fault_operations=["create"])
    outcome: list[StepResult] = []
    worker = threading.Thread(target=lambda: outcome.append(steps.create(ctx, ref)))
    worker.start()
    time.sleep(0.3)
    made = ctx.client.get(client_reference=ref).crypto_refund_id  # Create did its work
    news = {
        "cryptoRefundId": refund_id or made,
        "clientReference": ref,
        "originalTransactionId": f"tx-{ref}",
        "status": 1,
    }
    assert deliver(ctx, f"n-{ref}", news).outcome == "applied"
    assert ctx.ledger.get(ref).crypto_refund_id == (refund_id or made)  # the webhook won
    worker.join(timeout=10)
    (result,) = outcome
    return result, made


def test_a_create_answer_naming_another_refund_than_the_webhook_stops_for_a_human(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    result, made = create_while_a_webhook_lands(ctx, sandbox, "race-other", "CR-WEBHOOK-1")
    record = ctx.ledger.get("race-other")
    assert result.note != "superseded"
    assert record.state == State.NEEDS_ATTENTION
    assert record.last_error is not None
    assert (record.last_error["code"], record.last_error["ours"], record.last_error["theirs"]) == (
        PROVIDER_MISMATCH,
        "CR-WEBHOOK-1",
        made,
    )


def test_a_create_answer_agreeing_with_the_webhook_goes_on(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    result, made = create_while_a_webhook_lands(ctx, sandbox, "race-same", None)
    record = ctx.ledger.get("race-same")
    assert record.state == State.CREATED
    assert record.crypto_refund_id == made
    assert record.last_error is None
    assert result.note != "superseded"
