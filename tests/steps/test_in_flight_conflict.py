"""A 409 is a request still in flight, not a refusal: retried with backoff, never a stop.

The pipeline itself causes in-flight 409s (a soft time limit makes a refund due at once, the
backoff floor is 0.05 s, a lease can lapse). A 409 that carries a business code is that
business error, as its 422 would be.
"""

from __future__ import annotations

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.context import Context
from refunds.models import State
from tests.steps.conftest import make_context, received


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    return make_context(redis_db, sandbox, confirm_inline=False)


@pytest.mark.parametrize("operation", ["create", "confirm"])
def test_an_in_flight_409_is_retried_and_the_refund_goes_on(
    ctx: Context, sandbox: SandboxAdmin, operation: str
) -> None:
    ref = f"in-flight-{operation}"
    received(ctx, sandbox, ref)
    if operation == "confirm":
        steps.create(ctx, ref)
    sandbox.configure(error_rates={"409": 1.0}, fault_operations=[operation])
    steps.STEPS[operation](ctx, ref, None)  # type: ignore[index]
    record = ctx.ledger.get(ref)
    assert record.state != State.NEEDS_ATTENTION
    assert record.last_error is not None
    assert (record.last_error["status"], record.last_error["code"]) == (409, "REQUEST_IN_PROGRESS")
    assert ctx.ledger.due_at(ref) is not None  # back on the timer, with backoff
    sandbox.configure(error_rates={}, fault_operations=["create", "confirm", "get"])
    steps.STEPS[operation](ctx, ref, None)  # type: ignore[index]
    record = ctx.ledger.get(ref)
    assert record.last_error is None
    assert record.state == (State.CREATED if operation == "create" else State.PROCESSING)
