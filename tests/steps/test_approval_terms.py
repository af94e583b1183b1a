"""An approval is bound to what was approved: amount, currency, refund address and chain.

The approval records those terms. When provider news changes one of them between the approval
and the Confirm call, the refund is held again (its approval withdrawn, the change in its
history) and Confirm is not sent; an operator approves the new terms or not.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.context import Context
from refunds.models import State
from tests.steps.conftest import make_context, received
from tests.steps.news_helpers import deliver, provider_view


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    return make_context(redis_db, sandbox, approval_thresholds="USDT=100")


def approved(ctx: Context, sandbox: SandboxAdmin, ref: str) -> int | None:
    """A refund of 500.00 USDT held, then approved: answers the fence of the Confirm nudge."""
    received(ctx, sandbox, ref, amount="500.00")
    held = steps.create(ctx, ref)
    assert held.record is not None and held.record.state == State.AWAITING_APPROVAL
    result = actions.approve(ctx.ledger, ctx.settings, ref, actor="ann", reason="checked")
    assert result.record.approved_terms is not None
    assert result.record.approved_terms["amount"] == "500.00"
    return result.fence


@pytest.mark.parametrize(
    ("term", "change"),
    [
        ("amount", {"amount": "5000.00"}),
        ("currency", {"currency": "BTC"}),
        ("blockchain", {"blockchain": "ETH"}),
    ],
)
def test_news_that_changes_an_approved_term_holds_the_refund_again(
    ctx: Context, sandbox: SandboxAdmin, term: str, change: dict[str, Any]
) -> None:
    ref = f"terms-{term}"
    fence = approved(ctx, sandbox, ref)
    refund_id = ctx.ledger.get(ref).crypto_refund_id
    assert refund_id is not None
    deliver(ctx, f"n-{ref}", {**provider_view(ctx, refund_id), **change})
    result = steps.confirm(ctx, ref, fence)
    record = ctx.ledger.get(ref)
    assert sandbox.effects(ref) == {"create": 1, "confirm": 0}  # Confirm never sent
    assert record.state == State.AWAITING_APPROVAL, result.note
    assert record.approved_by is None and record.approved_terms is None
    assert term in record.history[-1].reason
    # Approved again, for the new terms, it goes.
    again = actions.approve(ctx.ledger, ctx.settings, ref, actor="ann", reason="new terms ok")
    done = steps.confirm(ctx, ref, again.fence)
    assert done.record is not None and done.record.state == State.PROCESSING
    assert sandbox.effects(ref) == {"create": 1, "confirm": 1}


def test_news_that_keeps_the_approved_terms_lets_the_refund_go(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    fence = approved(ctx, sandbox, "terms-same")
    refund_id = ctx.ledger.get("terms-same").crypto_refund_id
    assert refund_id is not None
    deliver(ctx, "n-terms-same", {**provider_view(ctx, refund_id), "amount": "500.0"})
    done = steps.confirm(ctx, "terms-same", fence)
    assert done.record is not None and done.record.state == State.PROCESSING
