"""Webhook-first polling (issue 9): with webhooks expected, the first Get waits the grace window.

Pure rules: ``Policy.poll_delay`` and the timers ``decide`` books with it. The end-to-end cases
(0 Gets with healthy webhooks, a dropped final webhook ending by polling) are in
tests/integration/test_webhook_first_polling.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from config.settings import load_settings
from refunds.decisions import decide
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State
from refunds.policy import Policy

NOW = 1_800_000_000.0
PLAIN = Policy(poll_schedule=(1.0, 2.0, 5.0))
WEBHOOK_FIRST = replace(PLAIN, webhook_grace_seconds=30.0)


def test_without_webhooks_the_schedule_is_used_as_is() -> None:
    assert [PLAIN.poll_delay(i) for i in range(5)] == [1.0, 2.0, 5.0, 5.0, 5.0]


def test_with_webhooks_expected_only_the_first_get_waits_the_grace_window() -> None:
    assert [WEBHOOK_FIRST.poll_delay(i) for i in range(5)] == [30.0, 2.0, 5.0, 5.0, 5.0]


def test_a_grace_shorter_than_the_first_step_never_polls_sooner_than_without_webhooks() -> None:
    assert replace(PLAIN, webhook_grace_seconds=0.5).poll_delay(0) == 1.0


def test_settings_turn_the_grace_on_only_when_webhooks_are_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFUNDS_POLL_SCHEDULE", "1,2")
    monkeypatch.setenv("REFUNDS_WEBHOOK_GRACE_SECONDS", "12.5")
    off = load_settings(profile="sandbox")
    assert off.webhooks_expected is False
    assert Policy.from_settings(off).webhook_grace_seconds is None
    assert Policy.from_settings(off).poll_delay(0) == 1.0
    monkeypatch.setenv("REFUNDS_WEBHOOKS_EXPECTED", "true")
    on = load_settings(profile="sandbox")
    assert Policy.from_settings(on).webhook_grace_seconds == 12.5
    assert [Policy.from_settings(on).poll_delay(i) for i in range(3)] == [12.5, 2.0, 2.0]


def test_the_default_grace_is_thirty_seconds_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(profile="sandbox").webhook_grace_seconds == 30.0
    for bad in ("0", "-1", "3601"):
        monkeypatch.setenv("REFUNDS_WEBHOOK_GRACE_SECONDS", bad)
        with pytest.raises(Exception, match="WEBHOOK_GRACE_SECONDS"):
            load_settings(profile="sandbox")


def _record(state: State, **more: object) -> RefundRecord:
    return RefundRecord(
        **{  # type: ignore[arg-type]
            "client_reference": "ref-1",
            "state": state,
            "original_transaction_type": 1,
            "original_transaction_id": "tx-1",
            "refund_address": "TMerchantAddr",
            "fingerprint": "fp",
            "created_at": NOW - 60,
            "updated_at": NOW - 30,
            "version": 3,
            "crypto_refund_id": "CR1",
            **more,
        }
    )


def _news(status: int) -> RefundData:
    return RefundData.model_validate(
        {"cryptoRefundId": "CR1", "clientReference": "ref-1", "status": status}
    )


def test_a_confirmed_refund_is_first_read_after_the_grace_window() -> None:
    rec = _record(State.CONFIRMING, provider_status=1)
    plain = decide(rec, _news(2), PLAIN, source="confirm", now=NOW)
    first = decide(rec, _news(2), WEBHOOK_FIRST, source="confirm", now=NOW)
    assert (plain.target, plain.timer, plain.due_in) == (State.PROCESSING, "set", 1.0)
    assert (first.target, first.timer, first.due_in) == (State.PROCESSING, "set", 30.0)


def test_after_the_safety_net_get_the_schedule_takes_over() -> None:
    rec = _record(State.PROCESSING, provider_status=2, polls=0)
    after = decide(rec, _news(2), WEBHOOK_FIRST, source="poll", now=NOW)
    assert (after.target, after.timer, after.due_in) == (State.PROCESSING, "set", 2.0)
    assert after.fields["polls"] == 1


def test_the_final_webhook_clears_the_safety_net_timer() -> None:
    rec = _record(State.PROCESSING, provider_status=2)
    done = decide(rec, _news(3), WEBHOOK_FIRST, source="webhook", now=NOW)
    assert (done.target, done.timer) == (State.COMPLETED, "clear")
