"""A refund address is checked against the chain MCE's Create answer names before Confirm.

The intent carries no chain, so an address that passed intake (printable ASCII, no spaces) is
checked once Create says ``blockchain``: invalid for that chain, the refund stops in
``needs_attention`` with ``ADDRESS_INVALID`` and no Confirm reaches the sandbox, also after an
operator's retry. Valid addresses are confirmed with the merchant's exact spelling.
"""

from __future__ import annotations

import base58
import bech32
import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.addresses import eip55
from refunds.context import Context
from refunds.models import State
from tests.steps.conftest import intent
from tests.steps.news_helpers import drive, requests_sent

TRON = base58.b58encode_check(bytes([0x41]) + bytes(range(20))).decode()
EVM_LOWER = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
EVM = eip55(EVM_LOWER)  # 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
BTC_V0 = bech32.encode("bc", 0, list(range(20)))
BTC_TAPROOT = "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"  # BIP-350 (v1)


def _flip_last_char(text: str) -> str:
    return text[:-1] + ("q" if text[-1] != "q" else "p")


@pytest.mark.parametrize(
    ("chain", "address"),
    [
        ("TRON", "TMerchantChosenAddress1"),  # printable, but no base58check
        ("TRON", TRON[:-1] + ("1" if TRON[-1] != "1" else "2")),  # one character off
        ("TRON", EVM),  # another chain's address
        ("ETH", TRON),
        ("ETH", "0x" + "a" * 39),  # 39 digits
        ("BSC", EVM_LOWER[:-1] + "g"),
        ("BTC", _flip_last_char(BTC_V0)),  # bech32 checksum
        ("BTC", BTC_V0.replace("bc1q", "bc1p", 1)),  # v1 needs bech32m (BIP-350)
        ("BTC", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3"),  # base58check checksum
        ("SOL", EVM),
    ],
)
def test_an_address_invalid_for_the_created_chain_stops_before_confirm(
    ctx: Context, sandbox: SandboxAdmin, chain: str, address: str
) -> None:
    ref = "addr-bad"
    sandbox.flag([f"tx-{ref}"], blockchain=chain)
    ctx.ledger.submit(intent(ref, refundAddress=address), due_in=60)
    record = drive(ctx, ref, 3)
    assert record.state == State.NEEDS_ATTENTION
    assert record.last_error is not None
    assert record.last_error["code"] == "ADDRESS_INVALID"
    assert record.last_error["field"] == "refundAddress"
    assert record.last_error["blockchain"] == chain
    assert record.last_error["message"].startswith(f"refundAddress: not an address on {chain}: ")
    assert record.blockchain == chain and record.crypto_refund_id  # the Create's answer, kept
    assert requests_sent(sandbox, "confirm") == []
    # An operator's retry goes back to Confirm's door, and it stays shut.
    actions.retry(ctx.ledger, ctx.settings, ref, actor="ops", reason="try again")
    again = drive(ctx, ref, 3, first="confirm")
    assert again.state == State.NEEDS_ATTENTION
    assert again.last_error is not None and again.last_error["code"] == "ADDRESS_INVALID"
    assert requests_sent(sandbox, "confirm") == []
    # Stopped before any Confirm, so it can be cancelled (and the payment submitted again).
    cancelled = actions.cancel(ctx.ledger, ctx.settings, ref, actor="ops", reason="bad address")
    assert cancelled.record.state == State.CANCELLED


@pytest.mark.parametrize(
    ("chain", "address"),
    [
        ("TRON", TRON),
        ("ETH", EVM),
        ("ETH", EVM_LOWER),  # one case: no checksum to check
        ("POLYGON", EVM_LOWER.upper().replace("0X", "0x")),
        ("BTC", BTC_V0),
        ("BTC", BTC_V0.upper()),
        ("BTC", BTC_TAPROOT),
        ("BTC", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
        ("SOLANA", "11111111111111111111111111111111"),
        ("SOME-NEW-CHAIN", "anything-printable:42"),  # no pattern guessed for an unknown chain
    ],
)
def test_a_valid_address_is_confirmed_as_the_merchant_spelled_it(
    ctx: Context, sandbox: SandboxAdmin, chain: str, address: str
) -> None:
    ref = "addr-good"
    sandbox.flag([f"tx-{ref}"], blockchain=chain)
    ctx.ledger.submit(intent(ref, refundAddress=address), due_in=60)
    record = drive(ctx, ref, 5)
    assert record.state == State.COMPLETED, record.last_error
    (sent,) = requests_sent(sandbox, "confirm")
    assert sent["body"]["refundAddress"] == address


def test_a_refund_without_an_address_is_confirmed_whatever_the_chain(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    ref = "addr-none"
    sandbox.flag([f"tx-{ref}"], blockchain="ETH")
    ctx.ledger.submit(intent(ref), due_in=60)
    assert drive(ctx, ref, 5).state == State.COMPLETED
    (sent,) = requests_sent(sandbox, "confirm")
    assert "refundAddress" not in sent["body"]


def test_create_then_confirm_in_one_task_never_sends_an_invalid_address(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """The Create step goes on into Confirm in the same task when it can: the check holds there."""
    ref = "addr-inline"
    sandbox.flag([f"tx-{ref}"], blockchain="ETH")
    ctx.ledger.submit(intent(ref, refundAddress=TRON), due_in=60)  # a TRON address, on ETH
    result = steps.create(ctx, ref)
    assert result.record is not None and result.record.state == State.NEEDS_ATTENTION
    assert requests_sent(sandbox, "confirm") == []
