"""The approval policy fails closed and compares exact decimals; settings carry raw values only."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from config.settings import load_settings
from refunds.policy import Policy, exact_amount

STRICT = Policy(approval_thresholds={"USDT": Decimal("1000")})


@pytest.mark.parametrize(
    ("amount", "currency", "held"),
    [
        (Decimal("1000.000000000000000001"), "USDT", True),
        (Decimal("999.999999999999999999"), "USDT", False),
        (Decimal("1000"), "USDT", False),  # at the threshold: not above it
        ("1000.000000000000000001", "usdt", True),  # text, any case of currency
        (Decimal("5000"), None, True),  # no currency: held
        (Decimal("5000"), "", True),  # empty currency: held
        (Decimal("5"), "DOGE", True),  # a currency nobody set a limit for: held
        (None, "USDT", True),  # missing amount
        (Decimal("-5000"), "USDT", True),  # negative
        (Decimal("-0.00"), "USDT", True),  # negative zero, as sent
        ("abc", "USDT", True),  # unparsable
        (Decimal("NaN"), "USDT", True),
        (Decimal("Infinity"), "USDT", True),
        (1000.0000000000001, "USDT", True),  # a float is never trusted as money
        (Decimal("0"), "USDT", False),
    ],
)
def test_with_thresholds_the_policy_fails_closed(
    amount: Any, currency: str | None, held: bool
) -> None:
    assert STRICT.needs_approval(amount, currency) is held


def test_without_thresholds_nothing_is_held() -> None:
    assert Policy().needs_approval(None, None) is False
    assert Policy().needs_approval(Decimal("1e30"), "USDT") is False


def test_exact_amount_keeps_every_digit() -> None:
    assert exact_amount("0.000000000000000001") == Decimal("1E-18")
    assert str(exact_amount(" 0.00000021 ")) == "2.1E-7"  # the value, exact (display is apart)
    assert exact_amount("1e400") == Decimal("1e400")
    assert exact_amount(True) is None
    assert exact_amount(0.5) is None


def test_policy_reads_raw_values_from_settings() -> None:
    s = load_settings(
        profile="sandbox",
        approval_thresholds="usdt=1000.000000000000000001,BTC=0.05",
        poll_schedule="1,3",
        held_poll_seconds=1800,
        not_found_grace_seconds=45,
    )
    policy = Policy.from_settings(s)
    assert policy.approval_thresholds == {
        "USDT": Decimal("1000.000000000000000001"),
        "BTC": Decimal("0.05"),
    }
    assert policy.needs_approval(Decimal("1000.000000000000000001"), "USDT") is False
    assert policy.needs_approval(Decimal("1000.000000000000000002"), "USDT") is True
    assert [policy.poll_delay(i) for i in range(4)] == [1.0, 3.0, 3.0, 3.0]
    assert (policy.held_poll_seconds, policy.not_found_grace_seconds) == (1800.0, 45.0)
    assert not hasattr(s, "needs_approval")  # the rule lives in the domain, not in Settings


def test_not_found_grace_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    monkeypatch.setenv("REFUNDS_NOT_FOUND_GRACE_SECONDS", "120")
    monkeypatch.setenv("REFUNDS_HELD_POLL_SECONDS", "3600")
    policy = Policy.from_settings(load_settings())
    assert (policy.not_found_grace_seconds, policy.held_poll_seconds) == (120.0, 3600.0)
