"""Odd values in MCE's refund object are read, never fatal, never trusted.

- A status that is not an integer (``"PROCESSING"``, ``2.5``) is followed as an unknown status:
  the refund is read again, never confirmed on it, and the text MCE sent is kept.
- An amount whose exponent is beyond any amount (``1e999999999``, a billion digits in plain
  notation) stops the refund for a human (``PROVIDER_AMOUNT_INVALID``) and is never formatted.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.context import Context
from refunds.decisions import PROVIDER_AMOUNT_INVALID, known_status
from refunds.models import State
from refunds.money import format_money
from tests.steps.conftest import make_context, received
from tests.steps.news_helpers import deliver, provider_view


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    return make_context(redis_db, sandbox, confirm_inline=False)


@pytest.mark.parametrize("status", ["PROCESSING", 2.5, True])
def test_a_webhook_with_a_non_integer_status_is_followed_as_unknown(
    ctx: Context, sandbox: SandboxAdmin, status: Any
) -> None:
    ref = f"odd-status-{str(status).lower()}"
    received(ctx, sandbox, ref)
    created = steps.create(ctx, ref).record
    assert created is not None and created.crypto_refund_id is not None
    news = {**provider_view(ctx, created.crypto_refund_id), "status": status}
    result = deliver(ctx, f"n-{ref}", news)  # raised WebhookRejectedError (400) before
    assert result.outcome == "applied"
    record = ctx.ledger.get(ref)
    assert record.state == State.CREATED
    assert not known_status(record.provider_status)
    assert record.status_info is not None and str(status) in record.status_info
    # Followed: the confirm step reads it (Get) while its status is unknown, never confirms.
    steps.confirm(ctx, ref)
    assert sandbox.effects(ref) == {"create": 1, "confirm": 0}


def test_an_amount_beyond_any_exponent_stops_for_a_human_at_once(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(refund_overrides={"huge": {"amount": "1e999999999"}})
    received(ctx, sandbox, "huge")
    started = time.monotonic()
    result = steps.create(ctx, "huge")
    record = ctx.ledger.get("huge")
    assert time.monotonic() - started < 2
    assert result.outcome == "anomaly"
    assert record.state == State.NEEDS_ATTENTION and record.amount is None
    assert record.last_error is not None
    assert record.last_error["code"] == PROVIDER_AMOUNT_INVALID
    assert record.last_error["values"] == {"amount": "1E+999999999"}


def test_the_formatter_refuses_an_amount_beyond_the_bounds_at_once() -> None:
    started = time.monotonic()
    for text in ("1e999999999", "1e-999999999", "0E-1000000"):
        with pytest.raises(ValueError, match="beyond"):
            format_money(Decimal(text))
    assert time.monotonic() - started < 0.1
    assert format_money(Decimal("1E+3")) == "1000"
