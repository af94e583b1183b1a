"""Intents, states and the transition table."""

from __future__ import annotations

import itertools

import pytest

from refunds.errors import InvalidIntentError
from refunds.models import FINAL_STATES, TRANSITIONS, RefundIntent, State, is_allowed


def valid(**over: object) -> dict[str, object]:
    return {
        "originalTransactionType": 1,
        "originalTransactionId": "tx-1",
        "clientReference": "ref-1",
        **over,
    }


def test_a_padded_address_is_refused_not_trimmed() -> None:
    # What is accepted is what is sent: a space is never silently removed from where money goes.
    with pytest.raises(InvalidIntentError) as caught:
        RefundIntent.parse(valid(refundAddress=" TAddr "))
    assert str(caught.value) == (
        "refundAddress: U+0020 SPACE at position 1 is not allowed "
        "(allowed: printable ASCII without spaces)"
    )


def test_valid_intent_keeps_contract_field_names() -> None:
    intent = RefundIntent.parse(valid(refundAddress="TAddr"))
    assert intent.content() == {
        "originalTransactionType": 1,
        "originalTransactionId": "tx-1",
        "clientReference": "ref-1",
        "refundAddress": "TAddr",
    }


def test_empty_address_is_absent_and_does_not_change_the_fingerprint() -> None:
    assert (
        RefundIntent.parse(valid(refundAddress="")).fingerprint()
        == RefundIntent.parse(valid()).fingerprint()
    )


def test_fingerprint_changes_with_content() -> None:
    assert (
        RefundIntent.parse(valid()).fingerprint()
        != RefundIntent.parse(valid(originalTransactionId="tx-2")).fingerprint()
    )


def test_numeric_string_type_is_accepted() -> None:
    assert RefundIntent.parse(valid(originalTransactionType="2")).original_transaction_type == 2


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (valid(originalTransactionType=7), "originalTransactionType", "must be one of"),
        (valid(originalTransactionType=True), "originalTransactionType", "integer"),
        (valid(clientReference="has space"), "clientReference", "U+0020 SPACE at position 4"),
        (valid(clientReference=""), "clientReference", "at least 1"),
        (valid(originalTransactionId="  "), "originalTransactionId", "U+0020 SPACE at position 1"),
        (valid(extra="x"), "extra", "unknown field"),
        (
            {"originalTransactionType": 1, "clientReference": "r"},
            "originalTransactionId",
            "is required",
        ),
    ],
)
def test_invalid_intents_name_the_field(data: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidIntentError) as info:
        RefundIntent.parse(data, line=4)
    (err,) = [e for e in info.value.errors if e.field == field]
    assert words in err.message
    assert err.line == 4
    assert str(err).startswith(f"line 4: {field}: ")


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidIntentError) as info:
        RefundIntent.parse({"originalTransactionType": 0, "clientReference": "a b"})
    assert {e.field for e in info.value.errors} == {
        "originalTransactionType",
        "originalTransactionId",
        "clientReference",
    }


def test_not_an_object() -> None:
    with pytest.raises(InvalidIntentError):
        RefundIntent.parse(["x"])


def test_final_states_are_sticky() -> None:
    for state in FINAL_STATES:
        assert TRANSITIONS[state] == frozenset()


def test_main_line_is_allowed_and_backwards_is_not() -> None:
    line = [
        State.RECEIVED,
        State.CREATING,
        State.CREATED,
        State.CONFIRMING,
        State.PROCESSING,
        State.COMPLETED,
    ]
    for a, b in itertools.pairwise(line):
        assert is_allowed(a, b)
        assert not is_allowed(b, a)


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(State)
    assert State.CANCELLED in FINAL_STATES and State.NEEDS_ATTENTION not in FINAL_STATES


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("originalTransactionId", "TX-\u200b1001", "U+200B ZERO WIDTH SPACE at position 4"),
        ("originalTransactionId", "TX-1001\x00", "U+0000 NULL at position 8"),
        ("originalTransactionId", "\u202eTX-1001", "U+202E RIGHT-TO-LEFT OVERRIDE at position 1"),
        ("originalTransactionId", "TX-1001\n", "U+000A LINE FEED at position 8"),
        ("originalTransactionId", "\u0422\u0425-1001", "U+0422 CYRILLIC CAPITAL LETTER TE"),
        ("clientReference", ".", "'.' is not a reference"),
        ("clientReference", "..", "'..' is not a reference"),
        ("clientReference", "order#7", "U+0023 NUMBER SIGN at position 6"),
        ("refundAddress", "T\u200b", "U+200B ZERO WIDTH SPACE at position 2"),
    ],
)
def test_hostile_identifiers_are_refused_naming_field_and_character(
    field: str, value: str, said: str
) -> None:
    with pytest.raises(InvalidIntentError) as caught:
        RefundIntent.parse(valid(**{field: value}))
    (error,) = caught.value.errors
    assert error.field == field
    assert said in error.message


def test_identifiers_are_kept_byte_exact() -> None:
    intent = RefundIntent.parse(
        valid(clientReference="ORDER-7:a@b+c=d", originalTransactionId="0xAbC/1#0")
    )
    assert intent.client_reference == "ORDER-7:a@b+c=d"
    assert intent.original_transaction_id == "0xAbC/1#0"
