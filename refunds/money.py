"""The one money formatter: how an amount leaves the process (API, CLI, notifications, logs).

``str(Decimal)`` switches to exponent form for small or trailing-zero-free values
(``str(Decimal("0.00000021"))`` is ``"2.1E-7"``), which merchants' parsers, spreadsheets and
humans misread. Amounts are therefore always written in plain decimal notation, with exactly the
digits received: the provider's precision is kept (``"1.10"`` stays ``"1.10"``), never rounded.
"""

from __future__ import annotations

from decimal import Decimal

#: The most digits an amount may have before and after its decimal point. Plain notation of
#: ``1E+999999999`` is a billion characters: an amount with an exponent beyond these bounds is
#: refused, never formatted (the provider's news carrying one is ``PROVIDER_AMOUNT_INVALID``).
MAX_INTEGER_DIGITS = 40
MAX_DECIMAL_PLACES = 40


def within_bounds(value: Decimal) -> bool:
    """Whether ``value`` is finite and its plain notation stays within the digit bounds."""
    if not value.is_finite():
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # noqa: S101 - finite values have an int exponent
    return value.adjusted() < MAX_INTEGER_DIGITS and -exponent <= MAX_DECIMAL_PLACES


def format_money(value: Decimal | None) -> str | None:
    """``value`` in plain decimal notation, or None for None.

    ``Decimal("0.00000021")`` -> ``"0.00000021"``, ``Decimal("1E-18")`` ->
    ``"0.000000000000000001"``, ``Decimal("1E+3")`` -> ``"1000"``, ``Decimal("1.10")`` ->
    ``"1.10"``. Raises ValueError for NaN or infinity, and for an exponent beyond the bounds
    (:func:`within_bounds`): no amount is ever one, so showing it would hide a bug upstream (and
    writing it out could cost gigabytes).
    """
    if value is None:
        return None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    if not within_bounds(value):
        raise ValueError(f"amount beyond {MAX_INTEGER_DIGITS} digits or places: {value:.6E}")
    return f"{value:f}"
