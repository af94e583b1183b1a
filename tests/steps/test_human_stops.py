"""A refund in ``needs_attention`` is a stop: only an operator's action, or final news about
the same refund, moves it. Non-final news (status 1, 2, or none at all) is recorded beside the
stop, never followed: the error stays, and no Confirm is sent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.context import Context
from refunds.decisions import PROVIDER_MISMATCH
from refunds.models import RefundRecord, State
from tests.steps.conftest import make_context, received
from tests.steps.news_helpers import deliver, provider_view


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    """Confirm as a step of its own, and a give-up clock of a tenth of a second: a Confirm that
    keeps failing stops the refund for a human at its second failure."""
    return make_context(redis_db, sandbox, confirm_inline=False, give_up_after=0.1)


def given_up_on_confirm(ctx: Context, sandbox: SandboxAdmin, ref: str) -> RefundRecord:
    """A refund created at the provider whose Confirm failed (500) until it was given up on."""
    received(ctx, sandbox, ref)
    assert steps.create(ctx, ref).record is not None
    sandbox.configure(error_rates={"500": 1.0}, fault_operations=["confirm"])
    steps.confirm(ctx, ref)
    time.sleep(0.15)
    steps.confirm(ctx, ref)
    sandbox.configure(error_rates={}, fault_operations=["create", "confirm", "get"])
    record = ctx.ledger.get(ref)
    assert record.state == State.NEEDS_ATTENTION
    assert record.last_error is not None and "gave up" in record.history[-1].reason
    return record


@pytest.mark.parametrize(
    ("label", "change"),
    [("status 1", {"status": 1}), ("no status", {"status": None})],
)
def test_non_final_news_keeps_a_stopped_refund_stopped_with_its_error(
    ctx: Context, sandbox: SandboxAdmin, label: str, change: dict[str, Any]
) -> None:
    ref = "stop-" + label.replace(" ", "-")
    stopped = given_up_on_confirm(ctx, sandbox, ref)
    assert stopped.crypto_refund_id is not None
    confirms = sandbox.calls().get("confirm", 0)
    news = {
        k: v
        for k, v in {**provider_view(ctx, stopped.crypto_refund_id), **change}.items()
        if v is not None
    }
    result = deliver(ctx, f"n-{ref}", news)
    record = ctx.ledger.get(ref)
    assert record.state == State.NEEDS_ATTENTION
    assert record.last_error == stopped.last_error  # the evidence stays
    assert result.next_task is None
    # Whatever a worker and the timer would run next sends no Confirm.
    steps.confirm(ctx, ref)
    assert sandbox.calls().get("confirm", 0) == confirms


def test_final_news_about_the_same_refund_ends_a_stop(ctx: Context, sandbox: SandboxAdmin) -> None:
    stopped = given_up_on_confirm(ctx, sandbox, "stop-final")
    assert stopped.crypto_refund_id is not None
    news = {**provider_view(ctx, stopped.crypto_refund_id), "status": 4}
    deliver(ctx, "n-stop-final", news)
    assert ctx.ledger.get("stop-final").state == State.FAILED


def mismatched(ctx: Context, sandbox: SandboxAdmin, ref: str) -> RefundRecord:
    """A refund whose Get named another refund id: stopped for a human (PROVIDER_MISMATCH)."""
    sandbox.configure(other_refund_id=[ref], processing_seconds=30)
    received(ctx, sandbox, ref)
    steps.create(ctx, ref)
    steps.confirm(ctx, ref)
    steps.poll(ctx, ref)
    sandbox.configure(other_refund_id=[])
    record = ctx.ledger.get(ref)
    assert record.last_error is not None
    assert (record.state, record.last_error["code"]) == (State.NEEDS_ATTENTION, PROVIDER_MISMATCH)
    return record


def test_bulk_retry_skips_a_stop_for_a_human_and_keeps_the_evidence(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    outage = given_up_on_confirm(ctx, sandbox, "bulk-outage")
    evidence = mismatched(ctx, sandbox, "bulk-mismatch")
    chosen = actions.select_for_retry(ctx.ledger)
    assert {r.client_reference for r in chosen} == {"bulk-outage", "bulk-mismatch"}
    report = actions.retry_many(ctx.ledger, ctx.settings, chosen, actor="ops", reason="outage over")
    assert list(report.retried) == ["bulk-outage"]
    assert "PROVIDER_MISMATCH" in report.skipped["bulk-mismatch"]
    kept = ctx.ledger.get("bulk-mismatch")
    assert (kept.state, kept.last_error, kept.key_generation) == (
        State.NEEDS_ATTENTION,
        evidence.last_error,
        0,
    )
    # The retried refund's error left last_error but is kept, whole, in its history.
    retried = ctx.ledger.get("bulk-outage")
    assert retried.last_error is None
    assert outage.last_error is not None
    line = retried.history[-1].reason
    assert outage.last_error["logId"] in line and outage.last_error["code"] in line


def test_bulk_retry_takes_a_stop_for_a_human_when_its_code_is_named(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    evidence = mismatched(ctx, sandbox, "named-mismatch")
    chosen = actions.select_for_retry(ctx.ledger, code="provider_mismatch")
    report = actions.retry_many(
        ctx.ledger, ctx.settings, chosen, actor="ops", reason="checked", code="provider_mismatch"
    )
    assert list(report.retried) == ["named-mismatch"]
    retried = ctx.ledger.get("named-mismatch")
    assert retried.state != State.NEEDS_ATTENTION
    assert evidence.last_error is not None
    assert evidence.last_error["theirs"] in retried.history[-1].reason
