"""The money formatter: plain decimal notation, exactly the digits received."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from refunds.cli.views import RECORD_FIELDS
from refunds.models import HistoryEntry, PublicRefund, RefundRecord, State
from refunds.money import format_money
from refunds.notify import outcome

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


# --- where money leaves the process -------------------------------------------------------------

PUBLIC_KEYS = [
    "clientReference",
    "state",
    "originalTransactionType",
    "originalTransactionId",
    "refundAddress",
    "cryptoRefundId",
    "providerStatus",
    "amount",
    "currency",
    "blockchain",
    "feeAmount",
    "feeCurrency",
    "txnHash",
    "statusInfo",
    "providerRefundAddress",
    "providerOriginalTransactionId",
    "approvedBy",
    "approvedAt",
    "approvedTerms",
    "kytRule",
    "kytAction",
    "kytRulesHash",
    "notificationIds",
    "kytPayment",
    "conflict",
    "attempts",
    "polls",
    "lastError",
    "createdAt",
    "updatedAt",
    "history",
]


def _record(**fields: object) -> RefundRecord:
    base: dict[str, object] = {
        "client_reference": "ref-1",
        "state": State.COMPLETED,
        "original_transaction_type": 1,
        "original_transaction_id": "tx-1",
        "refund_address": None,
        "fingerprint": "f" * 32,
        "created_at": 1_796_000_000.0,
        "updated_at": 1_796_000_001.5,
        "version": 3,
        "history": (
            HistoryEntry(1_796_000_000.0, None, "received", "submitted"),
            HistoryEntry(1_796_000_001.5, "processing", "completed", "webhook", "mce-webhook"),
        ),
    }
    return RefundRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_the_public_record_keeps_its_keys_and_writes_amounts_plainly() -> None:
    pub = _record(
        amount=Decimal("1E+3"), fee_amount=Decimal("2.1E-7"), currency="USDT"
    ).to_public()
    assert list(pub) == PUBLIC_KEYS
    assert pub["amount"] == "1000"
    assert pub["feeAmount"] == "0.00000021"
    assert pub["state"] == "completed"
    assert pub["createdAt"] == "2026-11-30T00:53:20.000Z"
    assert pub["history"][1] == {
        "at": "2026-11-30T00:53:21.500Z",
        "from": "processing",
        "to": "completed",
        "reason": "webhook",
        "actor": "mce-webhook",
    }
    assert json.loads(PublicRefund.of(_record()).model_dump_json(by_alias=True))["amount"] is None


def test_the_cli_record_view_shows_the_public_fields_in_order() -> None:
    assert list(RECORD_FIELDS) == [k for k in PUBLIC_KEYS if k not in ("lastError", "history")]


def test_merchant_notifications_write_the_amount_plainly() -> None:
    assert outcome(_record(amount=Decimal("2.1E-7")))["amount"] == "0.00000021"
    assert outcome(_record())["amount"] is None
