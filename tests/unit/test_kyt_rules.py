"""The KYT detector and rules, as pure functions: how a payment webhook is read, which rule
wins, what is denied, and how a bad rules file is reported (every problem, with its rule id)."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from refunds.identifiers import REFERENCE_MAX, reference_problem
from refunds.kyt.approval import confirm_needs_person
from refunds.kyt.detector import UNKNOWN, Payment, Readings, detect, parse_body
from refunds.kyt.outcomes import not_refundable
from refunds.kyt.rules import RulesError, decide, parse_rules, reference_for
from refunds.models import RefundRecord, State
from sandbox.payment_webhooks import payment_body
from sandbox.state import Payment as SandboxPayment

SETTINGS = load_settings(profile="sandbox")
READINGS = Readings.from_settings(SETTINGS)
CATEGORIES = SETTINGS.kyt_results.values()
RESULTS = SETTINGS.kyt_results.keys()

RULES = b"""
version = 1
[deny]
kyt_results = ["severe", "pending"]
kyt_types = [9]

[[rule]]
id = "off-everything"
action = "create"
mode = "off"

[[rule]]
id = "big-payments"
action = "propose"
mode = "active"
[rule.when]
amount_min = "1000"

[[rule]]
id = "usdt-high"
action = "create"
mode = "active"
[rule.when]
family = ["deposit", "checkout"]
kyt_result = ["high"]
currency = ["usdt"]
blockchain = ["tron"]
participant = ["P000123"]
amount_max = "999.99"

[[rule]]
id = "try-everything"
action = "create"
"""


def rules() -> Any:
    return parse_rules(RULES, "test.toml", CATEGORIES, RESULTS)


def webhook(txn: str = "TX-1", amount: str = "25.5", **kw: Any) -> Payment:
    sandbox_payment = SandboxPayment(
        transaction_type=kw.pop("transaction_type", 1),
        transaction_id=txn,
        amount=amount,
        currency=kw.pop("currency", "USDT"),
        blockchain=kw.pop("blockchain", "TRON"),
        outcome="completed",
    )
    _, body = payment_body(sandbox_payment, **kw)
    event = parse_body(body)
    assert event is not None
    payment = detect(READINGS, event)
    assert payment is not None
    return payment


def test_the_default_shape_is_read_by_the_default_settings() -> None:
    payment = webhook("TX-9", "0.000000000000000001", kyt_result=3, kyt_type=2)
    assert payment.family == "deposit"
    assert payment.transaction_type == 1
    assert payment.transaction_id == "TX-9"
    assert payment.pending
    assert payment.kyt_result == "3"
    assert payment.kyt_type == "2"
    assert payment.category == "high"
    assert payment.amount == Decimal("0.000000000000000001")  # a JSON number, read exactly
    assert payment.participant == "P000123"


def test_another_shape_is_read_once_the_settings_name_its_paths() -> None:
    payment_flat = webhook(shape="flat")
    assert not payment_flat.pending  # "To Be Refunded" is not a default statusInfo
    assert payment_flat.transaction_id is None
    s = load_settings(
        profile="sandbox",
        kyt_result_path="data.kytResult",
        kyt_type_path="data.kytType",
        kyt_transaction_id_path="data.txnId",
        kyt_pending_status_info="To Be Refunded",
    )
    sandbox_payment = SandboxPayment(1, "TX-F", "5", "USDT", "TRON", "completed")
    event = parse_body(payment_body(sandbox_payment, shape="flat", kyt_result=3)[1])
    assert event is not None
    payment = detect(Readings.from_settings(s), event)
    assert payment is not None
    assert (payment.pending, payment.transaction_id, payment.category) == (True, "TX-F", "high")


def test_a_refund_webhook_or_an_unknown_family_is_not_a_payment() -> None:
    body = {"eventType": "crypto.refund.updated.v2", "notificationId": "n1", "data": {}}
    assert detect(READINGS, body) is None
    assert detect(READINGS, {**body, "eventType": "fiat.deposit.updated"}) is None


def test_the_first_matching_rule_that_is_not_off_wins() -> None:
    assert decide(rules(), webhook()).rule == "usdt-high"
    assert decide(rules(), webhook(amount="5000")).rule == "big-payments"
    decision = decide(rules(), webhook(currency="USDC"))
    assert (decision.rule, decision.mode, decision.effect) == ("try-everything", "shadow", "shadow")
    assert not decision.makes_intent


def test_an_active_create_rule_makes_an_intent_under_the_payments_reference() -> None:
    decision = decide(rules(), webhook("TX-77"))
    assert (decision.effect, decision.action, decision.mode) == ("created", "create", "active")
    assert decision.reference == "kyt-1-TX-77"


def test_amount_bounds_compare_exact_decimals() -> None:
    assert decide(rules(), webhook(amount="999.99")).rule == "usdt-high"
    assert decide(rules(), webhook(amount="999.991")).rule == "try-everything"
    assert decide(rules(), webhook(amount="1000")).rule == "big-payments"


def test_deny_list_and_unknown_kyt_results_are_denied_before_any_rule() -> None:
    severe = decide(rules(), webhook(kyt_result=5))
    assert (severe.effect, severe.rule, severe.unmapped) == ("denied", None, False)
    unknown = decide(rules(), webhook(kyt_result=42))
    assert (unknown.effect, unknown.unmapped) == ("denied", True)
    assert webhook(kyt_result=42).category == UNKNOWN
    missing = decide(rules(), webhook(shape="no-kyt"))
    assert (missing.effect, missing.unmapped) == ("denied", True)
    by_type = decide(rules(), webhook(kyt_type=9))
    assert by_type.effect == "denied"
    assert "kytType 9" in by_type.why


def test_a_payment_that_is_not_pending_refund_is_not_flagged() -> None:
    event = parse_body(payment_body(SandboxPayment(1, "TX-N", "5", "USDT", "TRON", "x"))[1])
    assert event is not None
    event["data"]["statusInfo"] = "COMPLETED"
    payment = detect(READINGS, event)
    assert payment is not None
    assert decide(rules(), payment).effect == "not_flagged"


def test_the_reference_stays_within_the_reference_character_set() -> None:
    assert reference_for(2, "abc-1") == "kyt-2-abc-1"
    for txn in ("0x" + "ab" * 40, "hash#0", "a/b"):
        ref = reference_for(3, txn)
        assert reference_problem(ref) is None
        assert len(ref) <= REFERENCE_MAX
        assert ref == reference_for(3, txn)  # deterministic
    assert reference_for(3, "a/b") != reference_for(3, "a#b")


def test_a_bad_rules_file_lists_every_problem_with_its_rule_id() -> None:
    bad = b"""
    colour = "blue"
    [deny]
    kyt_results = ["awful"]
    [[rule]]
    id = "r1"
    action = "refund"
    mode = "loud"
    [rule.when]
    amount_min = 10.5
    currency = []
    [[rule]]
    id = "r1"
    action = "create"
    [rule.when]
    family = ["wire"]
    kyt_result = ["terrible"]
    amount_min = "10"
    amount_max = "5"
    [[rule]]
    action = "create"
    colour = "red"
    """
    with pytest.raises(RulesError) as caught:
        parse_rules(bad, "bad.toml", CATEGORIES, RESULTS)
    problems = caught.value.problems
    expected = [
        "unknown top-level key 'colour'",
        "deny.kyt_results: 'awful'",
        "rule r1: action 'refund'",
        "rule r1: mode 'loud'",
        "rule r1: when.amount_min: write the amount as a string",
        "rule r1: when.currency is empty",
        "rule r1: id used twice",
        "rule r1: when.family 'wire'",
        "rule r1: when.kyt_result 'terrible'",
        "rule r1: when.amount_min 10 is above amount_max 5",
        "rule #3: id is required",
        "rule #3: unknown key 'colour'",
    ]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert len(problems) == len(expected)


def test_a_file_that_is_not_toml_is_one_problem() -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(b"[[rule]\nid=", "x.toml")
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("not a TOML file")


def test_the_rules_hash_is_the_files_sha256() -> None:
    import hashlib  # noqa: PLC0415

    assert rules().digest == hashlib.sha256(RULES).hexdigest()


def _record(**kw: Any) -> RefundRecord:
    return RefundRecord(
        client_reference="kyt-1-TX-1",
        state=State.CREATING,
        original_transaction_type=1,
        original_transaction_id="TX-1",
        refund_address=None,
        fingerprint="f",
        created_at=1.0,
        updated_at=1.0,
        **kw,
    )


def test_only_a_rule_made_refunds_not_pending_create_is_not_refundable() -> None:
    error = {"code": "CRYPTO_REFUND_NOT_PENDING"}
    made = _record(kyt_rule="r", kyt_action="create")
    decision = not_refundable(
        made, operation="create", code="CRYPTO_REFUND_NOT_PENDING", error=error
    )
    assert decision is not None
    assert decision.target == State.NOT_REFUNDABLE
    assert decision.timer == "clear"
    assert not_refundable(_record(), operation="create", code=error["code"], error=error) is None
    assert not_refundable(made, operation="confirm", code=error["code"], error=error) is None
    assert not_refundable(made, operation="create", code="OTHER", error=error) is None


def test_a_rule_made_refund_waits_for_a_person_at_confirm() -> None:
    create = _record(kyt_rule="r", kyt_action="create")
    propose = _record(kyt_rule="r", kyt_action="propose")
    assert confirm_needs_person(create, create_needs_approval=True)
    assert not confirm_needs_person(create, create_needs_approval=False)
    assert confirm_needs_person(propose, create_needs_approval=False)
    assert not confirm_needs_person(_record(), create_needs_approval=True)
    approved = _record(kyt_rule="r", kyt_action="propose", approved_by="ann")
    assert not confirm_needs_person(approved, create_needs_approval=True)


def test_the_docs_page_rules_file_loads_as_copied() -> None:
    page = Path(__file__).resolve().parents[2] / "docs" / "kyt-rules.md"
    text = page.read_text(encoding="utf-8")
    start = text.index("```toml\n") + len("```toml\n")
    block = text[start : text.index("```", start)]
    loaded = parse_rules(block.encode(), "docs/kyt-rules.md", CATEGORIES, RESULTS)
    assert loaded.rules
    assert json.dumps(loaded.ids)


def test_a_flagged_payment_whose_id_could_not_be_refunded_is_unreadable_not_a_crash() -> None:
    for bad in ("TX\u200b1", "x" * 129):
        payment = webhook(bad)
        decision = decide(rules(), payment)
        assert (decision.effect, decision.reference) == ("unreadable", None)
        assert "originalTransactionId" in decision.why
    s = load_settings(profile="sandbox", kyt_transaction_type_path="data.status")  # 7: no type
    event = parse_body(payment_body(SandboxPayment(1, "TX-T", "5", "USDT", "TRON", "x"))[1])
    assert event is not None
    payment = detect(Readings.from_settings(s), event)
    assert payment is not None
    assert decide(rules(), payment).effect == "unreadable"


def test_the_gate_before_confirm_holds_a_rule_made_refund_whatever_its_amount() -> None:
    from refunds.decisions import hold_before_confirm  # noqa: PLC0415
    from refunds.policy import Policy  # noqa: PLC0415

    made = _record(kyt_rule="r", kyt_action="create", amount=Decimal("0.01"), currency="USDT")
    made = dataclasses.replace(made, state=State.CREATED)
    held = hold_before_confirm(made, Policy())  # no thresholds at all
    assert held is not None
    assert held.target == State.AWAITING_APPROVAL
    assert "Confirm waits for a person" in held.reason
    assert hold_before_confirm(dataclasses.replace(made, kyt_rule=None), Policy()) is None
    assert hold_before_confirm(made, Policy(kyt_create_needs_approval=False)) is None
    proposed = dataclasses.replace(made, kyt_action="propose")
    assert hold_before_confirm(proposed, Policy(kyt_create_needs_approval=False)) is not None
