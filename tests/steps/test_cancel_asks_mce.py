"""Cancel asks MCE first: a refund MCE already confirmed is never marked cancelled.

A failover can lose the write that began Confirm (or the one that recorded Create's id) while
MCE did confirm: the ledger then says ``created``, with no Confirm in its history. Cancel reads
the refund at MCE before it writes, and refuses when MCE says it is confirmed (status 2 or
more), or when MCE cannot be asked.
"""

from __future__ import annotations

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.context import Context
from refunds.errors import OperatorActionError
from refunds.models import State
from tests.steps.conftest import make_context, received


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    return make_context(redis_db, sandbox, confirm_inline=False)


def created(ctx: Context, sandbox: SandboxAdmin, ref: str) -> str:
    received(ctx, sandbox, ref)
    record = steps.create(ctx, ref).record
    assert record is not None and record.state == State.CREATED and record.crypto_refund_id
    return record.crypto_refund_id


def test_cancel_of_a_refund_mce_confirmed_behind_a_lost_write_is_refused(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(processing_seconds=30)
    refund_id = created(ctx, sandbox, "lost-confirm")
    # The Confirm whose beginning the failover lost: MCE confirmed it.
    ctx.client.confirm(crypto_refund_id=refund_id, refund_address=None, key="lost-write")
    before = ctx.ledger.get("lost-confirm")
    with pytest.raises(OperatorActionError) as info:
        actions.cancel(ctx.ledger, ctx.settings, "lost-confirm", actor="ann", reason="late")
    assert "MCE says it is confirmed (status 2" in info.value.why
    after = ctx.ledger.get("lost-confirm")
    assert (after.state, after.version) == (State.CREATED, before.version)


def test_cancel_of_a_refund_mce_created_but_did_not_confirm_goes_ahead(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    created(ctx, sandbox, "not-confirmed")
    result = actions.cancel(ctx.ledger, ctx.settings, "not-confirmed", actor="ann", reason="x")
    assert result.record.state == State.CANCELLED


def test_cancel_of_a_refund_whose_id_write_was_lost_asks_by_reference(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """Create and Confirm happened at MCE; the ledger still says ``received``."""
    sandbox.configure(processing_seconds=30)
    received(ctx, sandbox, "lost-all")
    made = ctx.client.create(
        original_transaction_type=1,
        original_transaction_id="tx-lost-all",
        client_reference="lost-all",
        key="lost-create",
    )
    assert made.crypto_refund_id is not None
    ctx.client.confirm(crypto_refund_id=made.crypto_refund_id, refund_address=None, key="lost-c")
    with pytest.raises(OperatorActionError):
        actions.cancel(ctx.ledger, ctx.settings, "lost-all", actor="ann", reason="late")
    assert ctx.ledger.get("lost-all").state == State.RECEIVED


def test_cancel_is_refused_while_mce_cannot_be_asked(ctx: Context, sandbox: SandboxAdmin) -> None:
    created(ctx, sandbox, "mce-down")
    sandbox.configure(error_rates={"503": 1.0}, fault_operations=["get"])
    with pytest.raises(OperatorActionError) as info:
        actions.cancel(ctx.ledger, ctx.settings, "mce-down", actor="ann", reason="x")
    assert "could not ask MCE" in info.value.why
    assert ctx.ledger.get("mce-down").state == State.CREATED
