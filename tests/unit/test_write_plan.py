"""The decision is the complete write plan: what the writer needs comes with it (the outbox
entries of a final outcome, the dispatch of its nudge, an inline Confirm), and one approval rule
holds a refund on every path to Confirm."""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import Any

from refunds.decisions import (
    FAILING_SINCE,
    decide,
    decide_failed_call,
    hold_before_confirm,
)
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State
from refunds.policy import Policy

NOW = 1_800_000_000.0
POLICY = Policy(poll_schedule=(1.0, 2.0), held_poll_seconds=3600.0, lease_seconds=90.0)
HELD = replace(POLICY, approval_thresholds={"USDT": Decimal("100")})


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
    return RefundData.model_validate({"cryptoRefundId": "CR1", "clientReference": "ref-1", **data})


def test_a_final_outcome_carries_one_outbox_entry_whatever_the_writers_channels() -> None:
    d = decide(record(State.PROCESSING), news(status=3), POLICY, source="poll", now=NOW)
    assert (d.target, d.notify, d.outbox) == (State.COMPLETED, True, ("outcome:ref-1",))


def test_the_outbox_entry_does_not_depend_on_the_settings() -> None:
    from config.settings import load_settings  # noqa: PLC0415

    for channels in ({}, {"notify_task": "merchant.refund_final"}):
        s = load_settings(profile="sandbox", **channels)
        assert Policy.from_settings(s).outbox_members("r") == ("outcome:r",)


def test_news_that_is_not_final_queues_no_notification() -> None:
    d = decide(record(State.CONFIRMING), news(status=2), POLICY, source="confirm", now=NOW)
    assert (d.target, d.outbox) == (State.PROCESSING, ())


def test_created_news_dispatches_confirm_and_may_run_it_inline() -> None:
    d = decide(record(State.CREATING), news(status=1), POLICY, source="create", now=NOW)
    assert (d.target, d.nudge, d.dispatch, d.inline) == (State.CREATED, "confirm", True, True)


def test_an_unknown_status_is_neither_dispatched_nor_confirmed_inline() -> None:
    d = decide(record(State.CREATING), news(status=9), POLICY, source="create", now=NOW)
    assert (d.target, d.nudge, d.dispatch, d.inline) == (State.CREATED, None, False, False)


def test_a_poll_is_not_a_dispatch() -> None:
    d = decide(record(State.CONFIRMING), news(status=2), POLICY, source="confirm", now=NOW)
    assert (d.timer, d.nudge, d.dispatch, d.inline) == ("set", None, False, False)


def test_the_confirm_task_holds_by_the_same_rule_as_created_news() -> None:
    big = record(State.CREATED, amount=Decimal("500"), currency="USDT")
    held = hold_before_confirm(big, HELD)
    assert held is not None
    assert (held.target, held.timer, held.due_in) == (State.AWAITING_APPROVAL, "set", 3600.0)
    assert held.note == "held for approval" and "approval threshold" in held.reason
    assert held.level == logging.WARNING
    by_news = decide(
        record(State.CREATING),
        news(status=1, amount="500", currency="USDT"),
        HELD,
        source="create",
        now=NOW,
    )
    assert (by_news.target, by_news.due_in) == (held.target, held.due_in)


def test_an_approved_or_small_refund_is_not_held_by_the_confirm_task() -> None:
    approved = record(State.CREATED, amount=Decimal("500"), currency="USDT", approved_by="ann")
    assert hold_before_confirm(approved, HELD) is None
    small = record(State.CREATED, amount=Decimal("50"), currency="USDT")
    assert hold_before_confirm(small, HELD) is None
    assert hold_before_confirm(record(State.CREATED), POLICY) is None  # no thresholds


def test_a_failed_call_plans_a_retry_with_its_streak_start() -> None:
    d = decide_failed_call(
        record(State.PROCESSING),
        POLICY,
        error={"code": "SERVICE_UNAVAILABLE"},
        retryable=True,
        code="SERVICE_UNAVAILABLE",
        attempts=2,
        backoff=1.5,
        retry_after=None,
        now=NOW,
    )
    assert (d.target, d.timer, d.due_in, d.reason) == (State.PROCESSING, "set", 1.5, "")
    assert d.fields == {
        "last_error": {"code": "SERVICE_UNAVAILABLE", FAILING_SINCE: NOW},
        "attempts": 2,
    }


def test_a_permanent_failure_plans_a_stop_for_a_human() -> None:
    d = decide_failed_call(
        record(State.CONFIRMING),
        POLICY,
        error={"code": "CRYPTO_REFUND_NOT_PENDING"},
        retryable=False,
        code="CRYPTO_REFUND_NOT_PENDING",
        attempts=1,
        backoff=1.0,
        retry_after=None,
        now=NOW,
    )
    assert (d.target, d.timer, d.code) == (
        State.NEEDS_ATTENTION,
        "clear",
        "CRYPTO_REFUND_NOT_PENDING",
    )
    assert d.reason == "provider refused: CRYPTO_REFUND_NOT_PENDING"


def test_a_contradiction_queues_the_merchants_notification_once_per_kind() -> None:
    cancelled = record(State.CANCELLED)
    d = decide(cancelled, news(status=3), POLICY, source="webhook", now=NOW)
    assert d.conflict is not None and d.outbox == ("contradiction:ref-1",)
    marked = replace(cancelled, conflict=dict(d.conflict))
    again = decide(marked, news(status=3), POLICY, source="webhook", now=NOW)
    assert again.conflict is not None and again.outbox == ()
