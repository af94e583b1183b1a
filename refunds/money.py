"""The one money formatter: how an amount leaves the process (API, CLI, notifications, logs).

``str(Decimal)`` switches to exponent form for small or trailing-zero-free values
(``str(Decimal("0.00000021"))`` is ``"2.1E-7"``), which merchants' parsers, spreadsheets and
humans misread. Amounts are therefore always written in plain decimal notation, with exactly the
digits received: the provider's precision is kept (``"1.10"`` stays ``"1.10"``), never rounded.
"""

from __future__ import annotations

from decimal import Decimal


def format_money(value: Decimal | None) -> str | None:
    """``value`` in plain decimal notation, or None for None.

    ``Decimal("0.00000021")`` -> ``"0.00000021"``, ``Decimal("1E-18")`` ->
    ``"0.000000000000000001"``, ``Decimal("1E+3")`` -> ``"1000"``, ``Decimal("1.10")`` ->
    ``"1.10"``. Raises ValueError for NaN or infinity: no amount is ever one, so showing it would
    hide a bug upstream.
    """
    if value is None:
        return None
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    return f"{value:f}"
