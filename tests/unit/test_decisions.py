"""The one decision for provider news, case by case: exact targets, fields, timers."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
import requests

from refunds import webhooks
from refunds.decisions import (
    PROVIDER_AMOUNT_INVALID,
    PROVIDER_MISMATCH,
    STEP_FOR_STATE,
    Decision,
    Source,
    decide,
)
from refunds.mce.client import MceClient
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State, iso
from refunds.policy import Policy
from refunds.steps.lease import continue_inline

NOW = 1_800_000_000.0
POLICY = Policy(
    poll_schedule=(1.0, 2.0, 5.0),
    held_poll_seconds=3600.0,
    lease_seconds=90.0,
    not_found_grace_seconds=120.0,
)
HELD = replace(POLICY, approval_thresholds={"USDT": Decimal("1000")})


def record(state: State, **more: Any) -> RefundRecord:
    base: dict[str, Any] = {
        "client_reference": "ref-1",
        "state": state,
        "original_transaction_type": 1,
        "original_transaction_id": "tx-1",
        "refund_address": "TMerchantAddr",
        "fingerprint": "fp",
        "created_at": NOW - 60,
        "updated_at": NOW - 30,
        "version": 3,
    }
    if state not in (State.RECEIVED, State.CREATING):
        base["crypto_refund_id"] = "CR1"
    base.update(more)
    return RefundRecord(**base)


def news(**data: Any) -> RefundData:
    body = {"cryptoRefundId": "CR1", "clientReference": "ref-1", **data}
    return RefundData.model_validate(body)


def run(rec: RefundRecord, n: RefundData, source: Source, policy: Policy = POLICY) -> Decision:
    return decide(rec, n, policy, source=source, now=NOW)


# --- 1. confirm loops ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [1, 2, None, 9])
def test_a_successful_confirm_is_followed_by_polling_whatever_status_it_carries(
    status: int | None,
) -> None:
    d = run(record(State.CONFIRMING, provider_status=1), news(status=status), "confirm")
    assert d.outcome == "applied"
    assert d.target == State.PROCESSING
    assert d.nudge is None  # Confirm just succeeded: never nudged again
    assert (d.timer, d.due_in) == ("set", 1.0)  # the first poll, on the timer
    assert d.reason == f"confirmed at provider: status {status}"


def test_an_already_confirmed_answer_whose_get_still_says_1_is_a_confirmation() -> None:
    # steps.confirm reads the refund after CRYPTO_REFUND_ALREADY_CONFIRMED and passes it as
    # source "confirm": the Get's status 1 must not send the refund back to Confirm.
    d = run(record(State.CONFIRMING, attempts=2), news(status=1), "confirm")
    assert (d.target, d.nudge, d.timer, d.due_in) == (State.PROCESSING, None, "set", 1.0)
    assert d.fields["attempts"] == 0 and d.fields["provider_status"] == 1


def test_a_poll_answering_status_1_keeps_polling_and_never_confirms() -> None:
    d = run(record(State.PROCESSING, provider_status=1, polls=1), news(status=1), "poll")
    # the delay after the second Get is the schedule's third entry
    assert (d.target, d.nudge, d.timer, d.due_in) == (State.PROCESSING, None, "set", 5.0)
    assert d.fields["polls"] == 2
    assert d.reason == ""  # no transition, no history line


def test_a_create_answer_nudges_confirm_once() -> None:
    d = run(
        record(State.CREATING, attempts=1), news(status=1, amount="5", currency="USDT"), "create"
    )
    assert (d.target, d.nudge, d.timer, d.due_in) == (State.CREATED, "confirm", "set", 90.0)
    assert d.fields["crypto_refund_id"] == "CR1"
    assert d.fields["provider_seen_at"] == NOW


def test_an_unknown_status_is_followed_by_get_never_answered_by_confirm() -> None:
    d = run(record(State.CREATING), news(status=9), "create")
    assert (d.target, d.nudge, d.timer, d.due_in) == (State.CREATED, None, "set", 1.0)
    assert d.fields["provider_status"] == 9
    assert d.level == logging.WARNING
    # ... and on a later read that still says 9, it stays created on the poll schedule.
    again = run(record(State.CREATED, provider_status=9), news(status=9), "poll")
    assert (again.target, again.nudge, again.due_in) == (State.CREATED, None, 2.0)
    # Once it reads 1, Confirm is due again (nudged: it was not the step that just ran).
    known = run(record(State.CREATED, provider_status=9), news(status=1), "poll")
    assert (known.target, known.nudge) == (State.CREATED, "confirm")


# --- 2. the merchant's refund address is never replaced -----------------------------------------


def test_the_providers_refund_address_is_recorded_beside_the_merchants() -> None:
    echo = news(status=1, refundAddress="TPayerSourceAddr", originalTransactionId="tx-1")
    d = run(record(State.CREATING), echo, "create")
    assert "refund_address" not in d.fields
    assert d.fields["provider_refund_address"] == "TPayerSourceAddr"
    assert d.fields["provider_transaction_id"] == "tx-1"
    assert "original_transaction_id" not in d.fields


def test_ledger_fields_never_name_an_intent_field() -> None:
    fields = news(status=2, refundAddress="TX", originalTransactionId="tx-1").ledger_fields()
    assert set(fields) & {"refund_address", "original_transaction_id", "client_reference"} == set()
    assert fields["provider_refund_address"] == "TX"


def test_status_info_is_recorded() -> None:
    d = run(record(State.PROCESSING), news(status=2, statusInfo="PROCESSING"), "poll")
    assert d.fields["status_info"] == "PROCESSING"


# --- 3. another refund id (or another original transaction) stops for a human -----------------


def test_a_webhook_naming_another_refund_id_is_a_mismatch_not_adopted() -> None:
    rec = record(State.PROCESSING, provider_status=2)
    d = run(rec, news(cryptoRefundId="CR2", status=3, txnHash="0xother"), "webhook")
    assert d.outcome == "mismatch"
    assert d.target == State.NEEDS_ATTENTION
    assert d.code == PROVIDER_MISMATCH
    assert d.timer == "clear" and d.nudge is None
    assert d.fields["last_error"]["code"] == PROVIDER_MISMATCH
    assert d.fields["last_error"]["field"] == "cryptoRefundId"
    assert (d.fields["last_error"]["ours"], d.fields["last_error"]["theirs"]) == ("CR1", "CR2")
    assert "txn_hash" not in d.fields and "crypto_refund_id" not in d.fields
    assert d.level == logging.ERROR


def test_another_original_transaction_on_the_duplicate_reference_path_is_a_mismatch() -> None:
    # Create answered DUPLICATE_CLIENT_REFERENCE; the Get by clientReference names another txn.
    d = run(record(State.CREATING), news(status=1, originalTransactionId="tx-9"), "lookup")
    assert (d.outcome, d.target, d.code) == ("mismatch", State.NEEDS_ATTENTION, PROVIDER_MISMATCH)
    err = d.fields["last_error"]
    assert (err["field"], err["ours"], err["theirs"]) == ("originalTransactionId", "tx-1", "tx-9")
    assert err["operation"] == "lookup"


def test_an_answer_for_another_client_reference_is_a_mismatch() -> None:
    d = run(record(State.CONFIRMING), news(clientReference="ref-2", status=2), "confirm")
    assert (d.target, d.code) == (State.NEEDS_ATTENTION, PROVIDER_MISMATCH)
    assert (d.fields["last_error"]["ours"], d.fields["last_error"]["theirs"]) == ("ref-1", "ref-2")


def test_a_refund_stopped_for_a_mismatch_stays_stopped_on_later_news() -> None:
    stopped = record(
        State.NEEDS_ATTENTION,
        last_error={"code": PROVIDER_MISMATCH, "field": "cryptoRefundId"},
    )
    d = run(stopped, news(status=3, txnHash="0xours"), "webhook")
    assert d.target == State.NEEDS_ATTENTION
    assert "last_error" not in d.fields and d.fields["txn_hash"] == "0xours"


def test_another_id_for_a_final_refund_is_marked_as_a_conflict() -> None:
    d = run(
        record(State.COMPLETED, provider_status=3), news(cryptoRefundId="CR2", status=3), "poll"
    )
    assert (d.outcome, d.target) == ("conflict", State.COMPLETED)
    assert d.conflict is not None and d.conflict["kind"] == "cryptoRefundId_mismatch"


# --- 4. news that contradicts a final or held state ---------------------------------------------


@pytest.mark.parametrize(
    ("final", "status", "kind"),
    [
        (State.CANCELLED, 3, "completed_after_cancelled"),
        (State.CANCELLED, 2, "processing_after_cancelled"),
        (State.FAILED, 3, "completed_after_failed"),
        (State.COMPLETED, 4, "failed_after_completed"),
        (State.REJECTED, 3, "completed_after_rejected"),
    ],
)
def test_news_contradicting_a_final_state_keeps_it_and_marks_a_conflict(
    final: State, status: int, kind: str
) -> None:
    d = run(record(final), news(status=status, txnHash="0xfeed"), "webhook")
    assert d.outcome == "conflict"
    assert d.target == final
    assert d.write is True and d.timer == "clear" and d.nudge is None and not d.notify
    mark = {
        "kind": kind,
        "providerStatus": status,
        "at": iso(NOW),
        "source": "webhook",
        "cryptoRefundId": "CR1",
        "txnHash": "0xfeed",
    }
    assert d.conflict == mark
    assert d.fields == {"conflict": mark}
    assert d.level == logging.ERROR


@pytest.mark.parametrize(
    ("final", "status"),
    [
        (State.COMPLETED, 3),
        (State.COMPLETED, 2),  # an older update, reordered
        (State.FAILED, 1),
        (State.CANCELLED, 1),
        (State.CANCELLED, 5),  # the provider agrees it is cancelled
        (State.REJECTED, 5),
    ],
)
def test_news_agreeing_with_a_final_state_changes_nothing(final: State, status: int) -> None:
    d = run(record(final), news(status=status), "webhook")
    assert (d.outcome, d.target, d.write) == ("stale", final, False)


@pytest.mark.parametrize(
    ("status", "target"),
    [(5, State.REJECTED), (4, State.FAILED), (3, State.COMPLETED), (2, State.PROCESSING)],
)
def test_a_held_refund_takes_news_that_makes_it_final_or_processing(
    status: int, target: State
) -> None:
    held = record(State.AWAITING_APPROVAL, provider_status=1, amount=Decimal("5000"))
    d = run(held, news(status=status), "webhook", HELD)
    assert d.target == target
    assert d.notify is (target != State.PROCESSING)
    if target == State.PROCESSING:
        assert (d.timer, d.due_in) == ("set", 1.0)


def test_a_held_refund_is_polled_slowly_and_stays_held_on_status_1() -> None:
    assert STEP_FOR_STATE[State.AWAITING_APPROVAL] == "poll"
    held = record(State.AWAITING_APPROVAL, provider_status=1, amount=Decimal("5000"))
    d = run(held, news(status=1, amount="5000", currency="USDT"), "poll", HELD)
    assert (d.target, d.nudge, d.timer, d.due_in) == (State.AWAITING_APPROVAL, None, "set", 3600.0)


# --- 5. approval fails closed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("5000", None),  # no currency
        ("5000", ""),  # empty currency
        ("5000", "DOGE"),  # a currency without a threshold
        (None, "USDT"),  # no amount
        ("1000.000000000000000001", "USDT"),
    ],
)
def test_a_create_answer_is_held_when_the_policy_cannot_clear_it(
    amount: str | None, currency: str | None
) -> None:
    d = run(
        record(State.CREATING), news(status=1, amount=amount, currency=currency), "create", HELD
    )
    assert (d.target, d.nudge, d.timer, d.due_in) == (State.AWAITING_APPROVAL, None, "set", 3600.0)
    assert "approval threshold" in d.reason


def test_an_amount_within_the_threshold_goes_on_to_confirm() -> None:
    n = news(status=1, amount="999.999999999999999999", currency="usdt")
    d = run(record(State.CREATING), n, "create", HELD)
    assert (d.target, d.nudge) == (State.CREATED, "confirm")


def test_a_json_number_amount_is_read_exactly_and_held() -> None:
    raw = b'{"cryptoRefundId":"CR1","clientReference":"ref-1","status":1,'
    raw += b'"amount":1000.000000000000000001,"currency":"USDT"}'
    n = RefundData.model_validate(json.loads(raw, parse_float=Decimal))
    assert n.amount == Decimal("1000.000000000000000001")
    d = run(record(State.CREATING), n, "create", HELD)
    assert d.target == State.AWAITING_APPROVAL
    assert d.fields["amount"] == Decimal("1000.000000000000000001")


def test_an_approved_refund_is_not_held_again() -> None:
    rec = record(State.CREATING, approved_by="alice", approved_at=NOW - 5)
    d = run(rec, news(status=1, amount="5000", currency="USDT"), "poll", HELD)
    assert (d.target, d.nudge) == (State.CREATED, "confirm")


@pytest.mark.parametrize(
    ("data", "bad"),
    [
        ({"amount": "-5000"}, {"amount": "-5000"}),
        ({"amount": "-0.00"}, {"amount": "-0.00"}),
        ({"amount": "abc"}, {"amount": "abc"}),
        ({"amount": "NaN"}, {"amount": "NaN"}),
        ({"amount": "Infinity"}, {"amount": "Infinity"}),
        ({"amount": "5", "feeAmount": "-1"}, {"feeAmount": "-1"}),
    ],
)
def test_a_negative_non_finite_or_unparsable_amount_stops_for_a_human(
    data: dict[str, Any], bad: dict[str, str]
) -> None:
    d = run(record(State.CREATING), news(status=1, currency="USDT", **data), "create", HELD)
    assert (d.outcome, d.target, d.code) == (
        "anomaly",
        State.NEEDS_ATTENTION,
        PROVIDER_AMOUNT_INVALID,
    )
    assert d.fields["last_error"]["values"] == bad
    assert d.timer == "clear" and d.nudge is None


def test_json_constants_nan_and_infinity_in_a_body_are_anomalies_not_crashes() -> None:
    raw = b'{"cryptoRefundId":"CR1","status":2,"amount":NaN,"feeAmount":Infinity}'
    n = RefundData.model_validate(json.loads(raw, parse_float=Decimal, parse_constant=Decimal))
    assert n.invalid_money == {"amount": "NaN", "feeAmount": "Infinity"}
    d = run(record(State.PROCESSING), n, "poll")
    assert (d.target, d.code) == (State.NEEDS_ATTENTION, PROVIDER_AMOUNT_INVALID)


# --- forward only, stale news ---------------------------------------------------------------------


def test_older_news_on_a_working_record_changes_nothing() -> None:
    d = run(record(State.PROCESSING, provider_status=2), news(status=1), "webhook")
    assert (d.outcome, d.write) == ("stale", False)


def test_older_news_from_a_poll_still_books_the_next_poll() -> None:
    d = run(record(State.PROCESSING, provider_status=2, polls=4), news(status=1), "poll")
    assert (d.outcome, d.target, d.timer, d.due_in) == ("stale", State.PROCESSING, "set", 5.0)
    assert d.fields == {"polls": 5}


def test_final_news_queues_notifications_and_clears_the_timer() -> None:
    d = run(record(State.PROCESSING, provider_status=2), news(status=3, txnHash="0xabc"), "poll")
    assert (d.target, d.timer, d.notify, d.nudge) == (State.COMPLETED, "clear", True, None)
    assert d.fields["txn_hash"] == "0xabc"


def test_the_client_and_the_webhook_read_json_numbers_as_exact_decimals() -> None:
    refund = (
        b'{"cryptoRefundId":"CR1","status":1,'
        b'"amount":1000.000000000000000001,"feeAmount":0.000000000000000001,"currency":"USDT"}'
    )
    raw = b'{"code":200,"data":' + refund + b"}"
    response = requests.Response()
    response.status_code = 200
    response._content = raw
    data = RefundData.model_validate(MceClient._data(response, "get"))
    assert data.amount == Decimal("1000.000000000000000001")
    assert data.fee_amount == Decimal("0.000000000000000001")
    event = b'{"notificationId":"n1","eventType":"crypto.refund.updated","data":' + refund + b"}"
    _, _, body = webhooks.parse(event)
    assert body["amount"] == Decimal("1000.000000000000000001")
    assert HELD.needs_approval(RefundData.model_validate(body).amount, "USDT") is True


# --- continue_inline: may a Create's task go on with Confirm? -----------------------------------


@pytest.mark.parametrize(
    ("elapsed", "call_budget", "soft_limit", "expected"),
    [
        (0.01, 20.0, 45.0, True),  # the defaults: 40 s of calls fit after a quick Create
        (4.99, 20.0, 45.0, True),
        (5.0, 20.0, 45.0, False),  # exactly full: a call could be cut short, so no
        (30.0, 20.0, 45.0, False),  # a slow Create: Confirm goes out as its own task
        (0.6, 3.0, 6.5, False),  # the steps test's case
    ],
)
def test_continue_inline_keeps_a_whole_steps_call_budget_under_the_soft_limit(
    elapsed: float, call_budget: float, soft_limit: float, expected: bool
) -> None:
    assert continue_inline(elapsed, call_budget, soft_limit) is expected


# --- needs_attention is a stop ----------------------------------------------------------------

GAVE_UP = {"code": "INTERNAL_ERROR", "message": "gave up after 90s of failures", "status": 500}


@pytest.mark.parametrize("source", ["poll", "webhook", "confirm", "create", "lookup"])
@pytest.mark.parametrize("status", [1, 2, None, 9])
def test_non_final_news_records_beside_a_stop_and_moves_nothing(
    source: Source, status: int | None
) -> None:
    rec = record(State.NEEDS_ATTENTION, crypto_refund_id="CR1", last_error=GAVE_UP)
    d = run(rec, news(status=status), source)
    assert d.target == State.NEEDS_ATTENTION
    assert "last_error" not in d.fields and "attempts" not in d.fields
    assert d.nudge is None and d.timer == "keep" and not d.notify


@pytest.mark.parametrize(("status", "final"), [(3, State.COMPLETED), (4, State.FAILED)])
def test_final_news_about_the_same_refund_ends_a_stop(status: int, final: State) -> None:
    rec = record(State.NEEDS_ATTENTION, crypto_refund_id="CR1", last_error=GAVE_UP)
    d = run(rec, news(status=status), "webhook")
    assert (d.target, d.notify) == (final, True)


# --- an approval is bound to its terms --------------------------------------------------------

TERMS = {
    "amount": "5000.00",
    "currency": "USDT",
    "refundAddress": "TMerchantAddr",
    "blockchain": None,
}


@pytest.mark.parametrize(
    ("change", "named"),
    [({"amount": "5000.01"}, "amount"), ({"currency": "USDC"}, "currency")],
)
def test_an_approval_for_other_terms_is_withdrawn_and_the_refund_held(
    change: dict[str, str], named: str
) -> None:
    rec = record(State.CREATING, approved_by="alice", approved_at=NOW - 5, approved_terms=TERMS)
    terms = {"amount": "5000.00", "currency": "USDT", **change}
    d = run(rec, news(status=1, **terms), "poll", HELD)
    assert (d.target, d.nudge) == (State.AWAITING_APPROVAL, None)
    assert d.fields["approved_by"] is None and d.fields["approved_terms"] is None
    assert named in d.reason


def test_an_approval_for_the_same_terms_goes_on_whatever_the_amounts_digits() -> None:
    rec = record(State.CREATING, approved_by="alice", approved_at=NOW - 5, approved_terms=TERMS)
    d = run(rec, news(status=1, amount="5000.0", currency="USDT"), "poll", HELD)
    assert (d.target, d.nudge) == (State.CREATED, "confirm")
