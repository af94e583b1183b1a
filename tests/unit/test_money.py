"""The money formatter: plain decimal notation, exactly the digits received."""

from __future__ import annotations

from decimal import Decimal

import pytest

from refunds.money import format_money

LONG = "123456789012345678901234567890.123456789"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0.00000021"), "0.00000021"),
        (Decimal("1E-18"), "0.000000000000000001"),
        (Decimal("5000"), "5000"),
        (Decimal("1.10"), "1.10"),
        (Decimal("1E+3"), "1000"),
        (Decimal("2.1E-7"), "0.00000021"),
        (Decimal("-0.5"), "-0.5"),
        (Decimal("0"), "0"),
        (Decimal("0.000"), "0.000"),
        (Decimal(LONG), LONG),
    ],
)
def test_amounts_are_written_in_plain_decimal_notation(value: Decimal, expected: str) -> None:
    assert format_money(value) == expected


def test_str_of_a_small_decimal_would_use_exponent_form_which_the_formatter_avoids() -> None:
    assert str(Decimal("0.00000021")) == "2.1E-7"
    assert "E" not in (format_money(Decimal("0.00000021")) or "")


def test_none_stays_none() -> None:
    assert format_money(None) is None


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_non_finite_values_are_refused(value: Decimal) -> None:
    with pytest.raises(ValueError, match="not a finite amount"):
        format_money(value)
