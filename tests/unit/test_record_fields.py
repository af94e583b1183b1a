"""The record's fields are declared once (``RefundRecord``, with ``kept`` metadata); the hash codec
and the public shape derive from that declaration. These tests build a record with every declared
field set away from its default, so a field added to the declaration is covered without an edit
here: it must round-trip through the hash and show in the public shape unless declared hidden.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any, get_args, get_type_hints

import pytest

from refunds.models import PUBLIC_FIELDS, HistoryEntry, PublicRefund, RefundRecord, State
from refunds.store.codec import FIELDS, decode, encode, stored_fields


def _value_of(hint: Any, n: int) -> Any:
    """A value of a declared type, distinct per field (``n``) and never a default."""
    base = next((a for a in get_args(hint) if a is not type(None)), hint)
    if base is State:
        return State.PROCESSING
    if getattr(base, "__origin__", base) is dict:
        return {"code": f"c{n}", "n": n}
    if getattr(base, "__origin__", base) is list:
        return [f"i{n}", f"j{n}"]
    if base is Decimal:
        return Decimal(f"{n}.0000001")
    samples = {str: f"v{n}", int: n + 1, float: 1_700_000_000.5 + n}
    return samples[base]


def full_record() -> RefundRecord:
    hints = get_type_hints(RefundRecord)
    values = {
        f.name: _value_of(hints[f.name], n)
        for n, f in enumerate(dataclasses.fields(RefundRecord))
        if f.name not in ("client_reference", "history")
    }
    history = (HistoryEntry(1.5, None, "received", "submitted"),)
    return RefundRecord(client_reference="ref-1", history=history, **values)


def test_every_declared_field_round_trips_through_the_hash() -> None:
    record = full_record()
    raw = {name: encode(value) for name, value in stored_fields(record).items()}
    declared = {f.name for f in dataclasses.fields(RefundRecord)} - {"client_reference", "history"}
    assert set(FIELDS) == declared
    assert set(raw) == set(FIELDS.values())  # every field set away from its default is stored
    line = json.dumps({"at": 1.5, "from": None, "to": "received", "reason": "submitted"})
    assert decode("ref-1", raw, None, [line]) == record


def test_fields_at_their_default_are_not_stored_and_read_back_as_the_default() -> None:
    record = dataclasses.replace(full_record(), attempts=0, polls=0, key_generation=0, amount=None)
    stored = stored_fields(record)
    assert {"attempts", "polls", "gen", "amount"}.isdisjoint(stored)
    raw = {name: encode(value) for name, value in stored.items()}
    assert decode("ref-1", raw, None) == dataclasses.replace(record, history=())


@pytest.mark.parametrize("missing", ["state", "type", "txn", "fp", "created", "updated"])
def test_a_hash_without_a_required_field_is_not_a_record(missing: str) -> None:
    raw = {n: encode(v) for n, v in stored_fields(full_record()).items() if n != missing}
    with pytest.raises(KeyError, match=missing):
        decode("ref-1", raw, None)


def test_the_public_shape_is_the_declared_fields_in_their_order_with_public_names() -> None:
    hidden = {
        "fingerprint",
        "participant_code",
        "participant",
        "provider_seen_at",
        "key_generation",
        "version",
    }
    expected = [
        PUBLIC_FIELDS.get(f.name, f.name)
        for f in dataclasses.fields(RefundRecord)
        if f.name not in hidden
    ]
    assert list(PublicRefund.model_fields) == expected
    assert PUBLIC_FIELDS["provider_transaction_id"] == "provider_original_transaction_id"
    shown = full_record().to_public()
    assert list(shown) == [
        "clientReference", "state", "originalTransactionType", "originalTransactionId",
        "refundAddress", "cryptoRefundId", "providerStatus", "amount", "currency", "blockchain",
        "feeAmount", "feeCurrency", "txnHash", "statusInfo", "providerRefundAddress",
        "providerOriginalTransactionId", "approvedBy", "approvedAt", "approvedTerms", "kytRule",
        "kytAction", "kytRulesHash", "notificationIds", "kytPayment", "conflict", "attempts",
        "polls", "lastError", "createdAt", "updatedAt", "history",
    ]  # fmt: skip


def test_the_public_shape_converts_times_amounts_and_history() -> None:
    record = dataclasses.replace(
        full_record(), amount=Decimal("0.0000001"), created_at=1.5, approved_at=None
    )
    shown = record.to_public()
    assert shown["amount"] == "0.0000001"  # plain notation, never 1E-7
    assert shown["createdAt"] == "1970-01-01T00:00:01.500Z"
    assert shown["approvedAt"] is None
    assert shown["history"] == [
        {
            "at": "1970-01-01T00:00:01.500Z",
            "from": None,
            "to": "received",
            "reason": "submitted",
            "actor": "pipeline",
        }
    ]
