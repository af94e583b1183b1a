"""Refund addresses (pure logic): the intake check, each chain's form and checksum, "same intent",
and the decision that stops a refund before Confirm when its address is not one of its chain."""

from __future__ import annotations

import base58
import bech32
import pytest

from refunds.addresses import (
    ADDRESS_INVALID,
    comparable,
    eip55,
    family,
    intake_problem,
    problem_for_chain,
)
from refunds.identifiers import describe, reference_problem, transaction_id_problem
from refunds.mce.schemas import RefundData
from refunds.models import State
from tests.unit.test_decisions import record, run

TRON = base58.b58encode_check(bytes([0x41]) + bytes(range(20))).decode()
EVM = eip55("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")


def test_eip55_matches_the_eip_test_vectors() -> None:
    for spelled in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ):
        assert eip55(spelled.lower()) == spelled
        assert problem_for_chain(spelled, "ETH") is None


@pytest.mark.parametrize(
    ("address", "said"),
    [
        (TRON + "\u200b", "U+200B ZERO WIDTH SPACE at position 35"),
        ("\ufeff" + TRON, "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1"),
        ("T x", "U+0020 SPACE at position 2"),
        ("\u200b\u200b", "U+200B ZERO WIDTH SPACE at position 1"),
        (EVM + "\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE at position 43"),
        ("0x\uff15aaeb", "U+FF15 FULLWIDTH DIGIT FIVE at position 3"),
        ("addr\ttab", "U+0009 CHARACTER TABULATION at position 5"),
        (EVM.replace("aA", "AA", 1), "does not match its EIP-55 checksum"),
        ("bc1QW508d6qejxtdg4c3q0gwm5yv0mdxmqzm7vzfqv", "mixed case is invalid (BIP-173)"),
        ("not an address!", "U+0020 SPACE at position 4"),
    ],
)
def test_intake_refuses_what_no_chain_has_naming_the_character(address: str, said: str) -> None:
    problem = intake_problem(address)
    assert problem is not None and said in problem


@pytest.mark.parametrize("address", [TRON, EVM, EVM.lower(), EVM.upper().replace("0X", "0x"),
                                     "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", "r9cZA1mLK5R",
                                     "addr1:memo=5", "0.0.12345"])
def test_intake_accepts_printable_addresses_of_any_chain(address: str) -> None:
    assert intake_problem(address) is None


@pytest.mark.parametrize(
    ("chain", "kind"),
    [("ETH", "evm"), ("bsc", "evm"), (" Polygon ", "evm"), ("TRON", "tron"), ("trc20", "tron"),
     ("BTC", "btc"), ("bitcoin", "btc"), ("SOL", "sol"), ("XRP", None), (None, None), ("", None)],
)
def test_chain_names_map_to_address_families(chain: str | None, kind: str | None) -> None:
    assert family(chain) == kind


def test_bech32m_is_required_for_witness_v1_and_bech32_for_v0() -> None:
    v0 = bech32.encode("bc", 0, list(range(20)))
    assert v0 is not None and problem_for_chain(v0, "BTC") is None
    # A v1 program under the bech32 (v0) checksum is invalid (BIP-350).
    v1_wrong = bech32.encode("bc", 1, list(range(32)))
    assert v1_wrong is not None
    assert "checksum" in (problem_for_chain(v1_wrong, "BTC") or "")
    taproot = "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
    assert problem_for_chain(taproot, "BTC") is None
    testnet = bech32.encode("tb", 0, list(range(20)))
    assert testnet is not None and problem_for_chain(testnet, "BTC") is not None  # mainnet only


def test_an_address_of_another_chain_is_named_with_the_chain() -> None:
    assert problem_for_chain(EVM, "TRON") == (
        "not an address on TRON: a TRON address is base58check (T and 33 more characters); "
        "its checksum fails"
    )
    assert problem_for_chain(TRON, "ETH") == (
        "not an address on ETH: an EVM address is 0x and 40 hex digits"
    )
    assert problem_for_chain("anything:42", "SOME-CHAIN") is None  # no pattern guessed


def test_evm_addresses_compare_case_insensitively_and_others_exactly() -> None:
    assert comparable(EVM) == comparable(EVM.lower()) == EVM.lower()
    assert comparable(TRON) == TRON and comparable(TRON.lower()) != TRON
    assert comparable(None) is None


def test_identifier_refusals_name_the_character_and_position() -> None:
    assert transaction_id_problem("tx-\u200b1") == (
        "U+200B ZERO WIDTH SPACE at position 4 is not allowed, an invisible format character "
        "(allowed: ASCII letters, digits and - _ . : / @ # + =)"
    )
    assert describe("\x00") == "U+0000 NULL"
    assert describe("\u0422") == "U+0422 CYRILLIC CAPITAL LETTER TE"
    assert reference_problem("..") is not None and reference_problem(".") is not None
    assert reference_problem("...") is None and reference_problem("a.b@c+d=e:f_g-h") is None
    assert reference_problem("a/b") is not None and transaction_id_problem("a/b#0") is None


# --- the decision before Confirm ----------------------------------------------------------------


def _created(**data: object) -> RefundData:
    body = {"cryptoRefundId": "CR1", "clientReference": "ref-1", "status": 1, **data}
    return RefundData.model_validate(body)


def test_a_create_answer_naming_a_chain_the_address_is_not_of_stops_for_a_human() -> None:
    d = run(record(State.CREATING, refund_address=EVM), _created(blockchain="TRON"), "create")
    assert d.target == State.NEEDS_ATTENTION and d.code == ADDRESS_INVALID
    assert d.nudge is None and d.timer == "clear"  # no Confirm
    assert d.fields["last_error"]["code"] == ADDRESS_INVALID
    assert d.fields["blockchain"] == "TRON"  # the provider's view is still recorded
    # Later news keeps the stop for a human.
    stopped = record(State.NEEDS_ATTENTION, refund_address=EVM, blockchain="TRON",
                     last_error=d.fields["last_error"], provider_status=1)
    assert run(stopped, _created(blockchain="TRON"), "poll").target == State.NEEDS_ATTENTION


@pytest.mark.parametrize("source", ["create", "lookup", "poll", "webhook"])
def test_a_valid_address_or_an_unknown_chain_goes_on_to_confirm(source: str) -> None:
    for address, chain in ((TRON, "TRON"), (EVM, "BASE"), (EVM, "NEWCHAIN"), (None, "ETH")):
        rec = record(State.CREATING, refund_address=address)
        d = run(rec, _created(blockchain=chain), source)  # type: ignore[arg-type]
        assert d.target == State.CREATED and d.code is None, (address, chain)


def test_news_that_the_refund_is_already_processing_is_followed_not_stopped() -> None:
    """The money already moved (Confirm happened elsewhere): stopping would hide it."""
    rec = record(State.CREATED, refund_address=EVM, provider_status=1)
    d = run(rec, _created(blockchain="TRON", status=2), "poll")
    assert d.target == State.PROCESSING and d.code is None
