"""The approval hold does not depend on the process an operator acts from.

Found by trying the release as a new user: with the workers on ``REFUNDS_APPROVAL_THRESHOLDS`` and
an operator's shell without it, ``refunds retry`` of a held refund that had stopped in
``needs_attention`` put it in ``created``, and the worker confirmed it: 500 USDT paid out with no
approval. Now a refund once held stays held until approved, whatever the acting process's
thresholds, and a Confirm task for a refund in ``created`` applies the worker's own rule first.
"""

from __future__ import annotations

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.models import State
from tests.steps.conftest import make_context, received


def test_a_retry_from_a_shell_without_thresholds_keeps_a_held_refund_held(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    worker = make_context(redis_db, sandbox, approval_thresholds="USDT=100")
    shell = make_context(redis_db, sandbox)  # the operator's CLI: no thresholds in its env
    received(worker, sandbox, "hn-1", amount="500.00")
    held = steps.create(worker, "hn-1")
    assert held.record is not None and held.record.state == State.AWAITING_APPROVAL
    # It stops (say the held poll's Get kept answering not-found past the grace window).
    record = worker.ledger.get("hn-1")
    worker.ledger.transition(record, State.NEEDS_ATTENTION, "test: stopped", timer="clear")

    result = actions.retry(shell.ledger, shell.settings, "hn-1", actor="frank", reason="fixed")
    assert result.record.state == State.AWAITING_APPROVAL
    assert result.next_task is None
    # Even a Confirm task sent by hand finds nothing to confirm.
    nothing = steps.confirm(worker, "hn-1")
    assert nothing.note == "nothing to confirm in state awaiting_approval"
    assert sandbox.effects("hn-1") == {"create": 1, "confirm": 0}

    approved = actions.approve(shell.ledger, shell.settings, "hn-1", actor="ann", reason="ok")
    assert approved.next_task == "confirm"
    done = steps.confirm(worker, "hn-1", approved.fence)
    assert done.record is not None and done.record.state == State.PROCESSING
    assert sandbox.effects("hn-1") == {"create": 1, "confirm": 1}


def test_a_confirm_task_for_a_created_refund_applies_the_workers_rule(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    """A refund that reached ``created`` without the rule (created by a process without
    thresholds, or retried into ``created``) is held by the worker that would confirm it."""
    lax = make_context(redis_db, sandbox, confirm_inline=False)  # no thresholds
    worker = make_context(redis_db, sandbox, approval_thresholds="USDT=100")
    received(lax, sandbox, "cr-1", amount="500.00")
    created = steps.create(lax, "cr-1")
    assert created.record is not None and created.record.state == State.CREATED
    assert created.next_task == "confirm"

    held = steps.confirm(worker, "cr-1", created.fence)
    assert held.note == "held for approval"
    assert held.record is not None and held.record.state == State.AWAITING_APPROVAL
    assert sandbox.effects("cr-1") == {"create": 1, "confirm": 0}
    assert worker.ledger.due_at("cr-1") is not None  # held refunds are still read, slowly

    # Under the threshold, the same path confirms.
    received(lax, sandbox, "cr-2", amount="50.00")
    small = steps.create(lax, "cr-2")
    done = steps.confirm(worker, "cr-2", small.fence)
    assert done.record is not None and done.record.state == State.PROCESSING
    assert sandbox.effects("cr-2") == {"create": 1, "confirm": 1}
