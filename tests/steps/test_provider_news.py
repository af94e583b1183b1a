"""Provider news is checked, never trusted, case by case.

Each test switches the in-process sandbox into a behaviour the contract allows (sandbox/config.py:
``confirm_async_seconds``, ``address_echo``, ``other_refund_id``, ``complete_unconfirmed_seconds``,
``refund_overrides``, ``amounts_as_numbers``, ``not_found_lag_seconds``, ``duplicate_mode``), calls
the steps directly against a real Redis and asserts the value that matters: calls the sandbox
counted, the body it received, the state, the conflict mark, the code.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.context import Context
from refunds.decisions import PROVIDER_MISMATCH
from refunds.mce.client import idempotency_key
from refunds.models import State
from refunds.notify import outcome
from tests.steps.conftest import intent, make_context, received
from tests.steps.news_helpers import deliver, drive, provider_view, requests_sent


@pytest.fixture
def ctx(redis_db: str, sandbox: SandboxAdmin) -> Context:
    """Confirm as a step of its own (``REFUNDS_CONFIRM_INLINE=false``): these cases put news
    between a Create and its Confirm, so the Create must stop at ``created``."""
    return make_context(redis_db, sandbox, confirm_inline=False)


def with_thresholds(ctx: Context, **thresholds: str) -> None:
    """Approval thresholds on this test's Context (currency -> exact decimal text)."""
    ctx.settings = ctx.settings.model_copy(
        update={"approval_thresholds": {c: Decimal(v) for c, v in thresholds.items()}}
    )


# --- 1. Confirm loops -----------------------------------------------------------------------------


def test_async_confirm_is_sent_once_per_refund(ctx: Context, sandbox: SandboxAdmin) -> None:
    """Confirm answers status 1 for 1.5 s: the refund is followed by Get, never re-Confirmed
    (issue: 1,265 Confirm calls in 15 s before)."""
    sandbox.configure(confirm_async_seconds=1.5)
    received(ctx, sandbox, "a-1")
    record = drive(ctx, "a-1", seconds=15)
    assert record.state == State.COMPLETED
    confirms = sandbox.calls().get("confirm", 0)
    print(f"\nconfirm calls for one refund, async confirm 1.5 s: {confirms}")
    assert confirms <= 2
    assert confirms == 1
    assert sandbox.effects("a-1") == {"create": 1, "confirm": 1}
    assert sandbox.calls().get("get", 0) >= 1  # followed by Get


def test_already_confirmed_whose_get_still_says_1_is_followed_not_reconfirmed(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """The first Confirm's answer is lost (the provider did confirm); the retry gets "already
    confirmed" and a Get that still says 1 (async): the refund is followed, never re-Confirmed."""
    sandbox.configure(confirm_async_seconds=3, confirm_mode="reject")
    received(ctx, sandbox, "a-2")
    assert steps.create(ctx, "a-2").next_task == "confirm"
    record = ctx.ledger.get("a-2")
    assert record.crypto_refund_id is not None
    # The provider confirms it (as the lost answer's Confirm did) behind our back.
    ctx.client.confirm(crypto_refund_id=record.crypto_refund_id, refund_address=None, key="lost-1")
    assert provider_view(ctx, record.crypto_refund_id)["status"] == 1
    result = steps.confirm(ctx, "a-2")  # answered 422 "already confirmed"
    assert result.record is not None and result.record.state == State.PROCESSING
    assert result.next_task is None
    again = drive(ctx, "a-2", seconds=2, first="poll")  # still status 1 for a while
    assert again.state == State.PROCESSING
    assert sandbox.calls().get("confirm", 0) == 2  # ours once, the lost one once
    assert sandbox.effects("a-2")["confirm"] == 1


# --- 2. The merchant's refund address ------------------------------------------------------------


@pytest.mark.parametrize("address", ["T9yED5xMV5ARV98BexN97aLZ1UUq7eKSxm", None])
def test_confirm_sends_the_merchants_address_or_none_despite_the_echo(
    ctx: Context, sandbox: SandboxAdmin, address: str | None
) -> None:
    sandbox.configure(address_echo=True)  # Create answers the payer's source address
    ref = "addr-" + ("given" if address else "none")
    sandbox.flag([f"tx-{ref}"])
    ctx.ledger.submit(intent(ref, refundAddress=address), due_in=60)
    created = steps.create(ctx, ref).record
    assert created is not None and created.provider_refund_address  # the echo, kept beside
    assert created.provider_refund_address != address
    steps.confirm(ctx, ref)
    (sent,) = requests_sent(sandbox, "confirm")
    assert sent["body"].get("refundAddress") == address  # the merchant's, or none at all
    assert ctx.ledger.get(ref).refund_address == address  # the intent never changes


# --- 3. Another refund id, another transaction --------------------------------------------------


def test_get_naming_another_refund_id_stops_for_a_human(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(other_refund_id=["oid-"], processing_seconds=30)
    received(ctx, sandbox, "oid-get")
    steps.create(ctx, "oid-get")
    ours = ctx.ledger.get("oid-get").crypto_refund_id
    steps.confirm(ctx, "oid-get")
    result = steps.poll(ctx, "oid-get")
    record = ctx.ledger.get("oid-get")
    assert result.outcome == "mismatch"
    assert record.state == State.NEEDS_ATTENTION
    assert record.crypto_refund_id == ours  # never adopted
    assert record.last_error is not None
    assert record.last_error["code"] == PROVIDER_MISMATCH
    assert record.last_error["ours"] == ours
    assert record.last_error["theirs"] not in (None, ours)


def test_webhook_naming_another_refund_id_stops_for_a_human(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(other_refund_id=["oid-"], processing_seconds=30)
    received(ctx, sandbox, "oid-wh")
    steps.create(ctx, "oid-wh")
    ours = ctx.ledger.get("oid-wh").crypto_refund_id
    assert ours is not None
    steps.confirm(ctx, "oid-wh")
    # What the confused provider's webhook carries: another id and hash, saying "completed".
    news = {**provider_view(ctx, ours), "status": 3, "txnHash": "0x" + "ab" * 32}
    theirs = news["cryptoRefundId"]
    assert theirs != ours
    result = deliver(ctx, "n-oid", news)
    record = ctx.ledger.get("oid-wh")
    assert result.outcome == "mismatch"
    assert record.state == State.NEEDS_ATTENTION  # not completed with the other id and hash
    assert record.crypto_refund_id == ours and record.txn_hash is None  # nothing adopted
    assert record.last_error is not None
    assert (record.last_error["code"], record.last_error["ours"], record.last_error["theirs"]) == (
        PROVIDER_MISMATCH,
        ours,
        theirs,
    )


def test_webhook_is_matched_by_refund_id_before_client_reference(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """An event whose id is A's but whose clientReference names B stops A; B is untouched."""
    for ref in ("rid-a", "rid-b"):
        received(ctx, sandbox, ref)
        steps.create(ctx, ref)
    a = ctx.ledger.get("rid-a")
    assert a.crypto_refund_id is not None
    assert ctx.ledger.reference_of_refund_id(a.crypto_refund_id) == "rid-a"
    news = {**provider_view(ctx, a.crypto_refund_id), "clientReference": "rid-b", "status": 3}
    result = deliver(ctx, "n-rid", news)
    assert (result.outcome, result.client_reference) == ("mismatch", "rid-a")
    a = ctx.ledger.get("rid-a")
    assert a.state == State.NEEDS_ATTENTION
    assert a.last_error is not None
    assert (a.last_error["code"], a.last_error["ours"], a.last_error["theirs"]) == (
        PROVIDER_MISMATCH,
        "rid-a",
        "rid-b",
    )
    assert ctx.ledger.get("rid-b").state == State.CREATED


def test_duplicate_reference_naming_another_transaction_stops_for_a_human(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """The provider already has a refund for the reference, of another payment: Create answers
    "duplicate reference", the look-up finds it, and it is not adopted."""
    sandbox.configure(duplicate_mode="reject")
    sandbox.flag(["tx-other", "tx-dup"])
    ctx.client.create(
        original_transaction_type=1,
        original_transaction_id="tx-other",
        client_reference="dup",
        key="someone-else-1",
    )
    ctx.ledger.submit(intent("dup"), due_in=60)
    result = steps.create(ctx, "dup")
    record = ctx.ledger.get("dup")
    assert result.outcome == "mismatch"
    assert record.state == State.NEEDS_ATTENTION
    assert record.crypto_refund_id is None
    assert record.last_error is not None
    assert (record.last_error["code"], record.last_error["ours"], record.last_error["theirs"]) == (
        PROVIDER_MISMATCH,
        "tx-dup",
        "tx-other",
    )
    assert sandbox.effects("dup") == {"create": 1, "confirm": 0}  # the other one only


# --- 4. News contradicting a final or held state -------------------------------------------------


def test_cancelled_then_the_provider_completes_it_stays_cancelled_and_is_marked(
    ctx: Context, sandbox: SandboxAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox.configure(complete_unconfirmed_seconds=0.3)
    received(ctx, sandbox, "cx")
    steps.create(ctx, "cx")
    actions.cancel(ctx.ledger, ctx.settings, "cx", actor="ann", reason="merchant withdrew it")
    rid = ctx.ledger.get("cx").crypto_refund_id
    assert rid is not None
    time.sleep(0.5)
    news = provider_view(ctx, rid)
    assert news["status"] == 3  # the provider completed it anyway
    with caplog.at_level(logging.ERROR):
        result = deliver(ctx, "n-cx", news)
    record = ctx.ledger.get("cx")
    assert (result.outcome, result.state) == ("contradiction", "cancelled")
    assert record.state == State.CANCELLED
    assert record.conflict is not None
    assert (record.conflict["kind"], record.conflict["providerStatus"]) == (
        "completed_after_cancelled",
        3,
    )
    assert record.conflict["at"]
    assert ctx.ledger.conflicted() == ["cx"]
    assert ctx.stats.conflicts() == {"completed_after_cancelled": 1}
    assert any(
        r.levelno == logging.ERROR and "contradicts" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    ("outcome_at_provider", "news_status", "kind"),
    [("failed", 3, "completed_after_failed"), ("completed", 4, "failed_after_completed")],
)
def test_final_state_contradicted_keeps_it_and_marks_it(
    ctx: Context, sandbox: SandboxAdmin, outcome_at_provider: str, news_status: int, kind: str
) -> None:
    ref = "fin-" + outcome_at_provider
    received(ctx, sandbox, ref, outcome=outcome_at_provider)
    final = drive(ctx, ref, seconds=10)
    assert final.state == State(outcome_at_provider)
    assert final.crypto_refund_id is not None
    news = {**provider_view(ctx, final.crypto_refund_id), "status": news_status}
    result = deliver(ctx, "n-" + ref, news)
    record = ctx.ledger.get(ref)
    assert (result.outcome, record.state) == ("contradiction", final.state)
    assert record.conflict is not None
    assert (record.conflict["kind"], record.conflict["providerStatus"]) == (kind, news_status)
    assert ctx.ledger.conflicted() == [ref]
    assert ctx.stats.conflicts() == {kind: 1}


def test_awaiting_approval_then_rejected_by_the_provider_is_rejected(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    with_thresholds(ctx, USDT="1000")
    received(ctx, sandbox, "held", amount="5000", currency="USDT")
    steps.create(ctx, "held")
    held = ctx.ledger.get("held")
    assert held.state == State.AWAITING_APPROVAL and held.crypto_refund_id is not None
    due = ctx.ledger.due_at("held")
    assert due is not None and due > time.time() + 3000  # read slowly, not never
    news = {**provider_view(ctx, held.crypto_refund_id), "status": 5}
    result = deliver(ctx, "n-held", news)
    assert (result.outcome, result.state) == ("applied", "rejected")
    assert ctx.ledger.get("held").state == State.REJECTED
    assert sandbox.calls().get("confirm", 0) == 0


# --- 5. Approval fails closed; exact thresholds ---------------------------------------------------


def _created_with(ctx: Context, sandbox: SandboxAdmin, ref: str, **override: str) -> Any:
    sandbox.configure(refund_overrides={ref: override})
    received(ctx, sandbox, ref)
    return steps.create(ctx, ref)


def test_large_amount_with_an_empty_currency_is_held(ctx: Context, sandbox: SandboxAdmin) -> None:
    with_thresholds(ctx, USDT="1000")
    result = _created_with(ctx, sandbox, "empty-cur", amount="5000", currency="")
    assert result.next_task is None
    assert ctx.ledger.get("empty-cur").state == State.AWAITING_APPROVAL
    assert sandbox.calls().get("confirm", 0) == 0


@pytest.mark.parametrize("amount", ["-5000", "-0.00"])
def test_negative_amounts_are_stopped(ctx: Context, sandbox: SandboxAdmin, amount: str) -> None:
    with_thresholds(ctx, USDT="1000")
    ref = "neg" + amount
    result = _created_with(ctx, sandbox, ref, amount=amount, currency="USDT")
    record = ctx.ledger.get(ref)
    assert result.next_task is None
    assert record.state in (State.NEEDS_ATTENTION, State.AWAITING_APPROVAL)
    assert record.state == State.NEEDS_ATTENTION
    assert record.last_error is not None and record.last_error["code"] == "PROVIDER_AMOUNT_INVALID"
    assert sandbox.calls().get("confirm", 0) == 0


@pytest.mark.parametrize(
    ("amount", "state"),
    [
        ("1000.000000000000000001", State.AWAITING_APPROVAL),
        ("999.999999999999999999", State.CREATED),
    ],
)
def test_thresholds_compare_exact_decimals_sent_as_json_numbers(
    ctx: Context, sandbox: SandboxAdmin, amount: str, state: State
) -> None:
    with_thresholds(ctx, USDT="1000")
    sandbox.configure(amounts_as_numbers=True)
    ref = "exact-" + amount[:4]
    _created_with(ctx, sandbox, ref, amount=amount, currency="USDT")
    record = ctx.ledger.get(ref)
    assert record.state == state
    assert record.amount == Decimal(amount)  # not 1000.0


# --- 6. Money printed plainly ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fee", "shown"),
    [
        ("0.00000021", "0.00000021"),
        ("0.000000000000000001", "0.000000000000000001"),
        ("1E-18", "0.000000000000000001"),
    ],
)
def test_tiny_fees_are_shown_in_plain_decimals(
    ctx: Context, sandbox: SandboxAdmin, fee: str, shown: str
) -> None:
    sandbox.configure(amounts_as_numbers=True)
    ref = "fee-" + str(len(fee))
    _created_with(ctx, sandbox, ref, feeAmount=fee, amount="0.00000021")
    final = drive(ctx, ref, seconds=10, first="confirm")
    assert final.state == State.COMPLETED
    public = final.to_public()
    assert public["feeAmount"] == shown
    assert "E" not in public["feeAmount"] and "e" not in public["feeAmount"]
    assert public["amount"] == "0.00000021"
    assert outcome(final)["amount"] == "0.00000021"  # the merchant's notification


# --- 7. Edges that strand a refund ----------------------------------------------------------------


def test_not_found_right_after_create_is_read_lag_then_found(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(not_found_lag_seconds=1.0)
    received(ctx, sandbox, "lag")
    steps.create(ctx, "lag")
    steps.confirm(ctx, "lag")
    lagging = steps.poll(ctx, "lag")
    assert lagging.record is not None and lagging.record.state == State.PROCESSING
    assert lagging.record.last_error is not None
    assert lagging.record.last_error["code"] == "CRYPTO_REFUND_NOT_FOUND"
    assert ctx.ledger.due_at("lag") is not None  # read again on the timer
    time.sleep(1.2)
    final = drive(ctx, "lag", seconds=10, first="poll")
    assert final.state == State.COMPLETED
    assert final.last_error is None


def test_retry_after_an_ambiguous_create_makes_exactly_one_provider_refund(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """The provider de-duplicates on the idempotency key only (duplicate_mode "new"): the retry's
    new key generation would make a second refund; the look-up first finds the first one."""
    sandbox.configure(duplicate_mode="new")
    received(ctx, sandbox, "amb")
    made = ctx.client.create(  # the ambiguous Create: made at the provider, answer lost
        original_transaction_type=1,
        original_transaction_id="tx-amb",
        client_reference="amb",
        key=idempotency_key("create", "amb", 0),
    )
    stuck = ctx.ledger.transition(ctx.ledger.get("amb"), State.CREATING, "create attempt 1")
    ctx.ledger.transition(stuck, State.NEEDS_ATTENTION, "gave up after 60 attempts: timeout")
    retried = actions.retry(ctx.ledger, ctx.settings, "amb", actor="ann", reason="back")
    assert retried.record.key_generation == 1
    final = drive(ctx, "amb", seconds=10)
    assert final.state == State.COMPLETED
    assert final.crypto_refund_id == made.crypto_refund_id
    assert sandbox.effects("amb") == {"create": 1, "confirm": 1}  # one provider refund
