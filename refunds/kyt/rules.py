"""The KYT rules: a TOML file of ordered rules, validated whole, and the pure decision they make.

A file (``REFUNDS_KYT_RULES_FILE``, ``docs/kyt-rules.md``) has a ``[deny]`` table (kytResult
categories or values and kytType values that are never refunded automatically) and ``[[rule]]``
tables in order: ``id``, ``action`` (ignore, record, propose, create), ``mode`` (off, shadow by
default, active) and ``[rule.when]`` conditions (family, kyt_result, kyt_type, participant,
currency, blockchain: lists, any of; amount_min, amount_max: inclusive exact decimals, written as
strings). The first rule that is not off and matches wins. Loading reports every problem of a
file at once, each with its rule id, so a person fixes a file in one pass.

:func:`decide` is pure: the receiver (live) and ``refunds rules backtest`` (replay) call it with
the same payment and rules, so a backtest shows exactly what the live run decided.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from refunds.identifiers import REFERENCE_MAX, reference_problem
from refunds.kyt.detector import UNKNOWN, Payment

ACTIONS = ("ignore", "record", "propose", "create")
MODES = ("off", "shadow", "active")
FAMILIES = ("deposit", "collection", "checkout")
_LISTS = ("family", "kyt_result", "kyt_type", "participant", "currency", "blockchain")
_CONDITIONS = (*_LISTS, "amount_min", "amount_max")
_RULE_KEYS = ("id", "action", "mode", "when", "note")
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class RulesError(Exception):
    """A rules file that cannot be used; ``problems`` lists every one (with its rule id)."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid KYT rules file {source}: " + "; ".join(problems))


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    mode: str = "shadow"
    when: Mapping[str, frozenset[str]] = field(default_factory=dict)
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None

    def matches(self, payment: Payment) -> bool:
        values = {
            "family": payment.family,
            "kyt_result": payment.kyt_result,
            "kyt_type": payment.kyt_type,
            "participant": payment.participant,
            "currency": (payment.currency or "").upper() or None,
            "blockchain": (payment.blockchain or "").upper() or None,
        }
        for name, allowed in self.when.items():
            value = values[name]
            if name == "kyt_result":
                if not ({payment.category, value} & allowed):
                    return False
            elif value is None or value not in allowed:
                return False
        if self.amount_min is not None or self.amount_max is not None:
            if payment.amount is None:
                return False
            if self.amount_min is not None and payment.amount < self.amount_min:
                return False
            if self.amount_max is not None and payment.amount > self.amount_max:
                return False
        return True


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    deny_results: frozenset[str]  # categories or raw kytResult values
    deny_types: frozenset[str]
    digest: str  # sha256 of the file's bytes: what a rule-made refund records
    source: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.rules)


@dataclass(frozen=True)
class Decision:
    """What the rules make of one payment webhook.

    ``effect``: not_flagged (not pending refund), unreadable (a flagged payment without a usable
    transaction id), denied (deny list, or an unknown kytResult: ``unmapped``), no_rule, shadow
    (a shadow rule matched: recorded, nothing done), or the active action's effect: ignored,
    recorded, proposed, created. ``reference``: the one clientReference of the payment.
    """

    effect: str
    rule: str | None = None
    action: str | None = None
    mode: str | None = None
    why: str = ""
    unmapped: bool = False
    reference: str | None = None

    @property
    def makes_intent(self) -> bool:
        return self.effect in ("proposed", "created")

    def to_dict(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "rule": self.rule,
            "action": self.action,
            "mode": self.mode,
            "why": self.why,
            "reference": self.reference,
        }


_EFFECT = {"ignore": "ignored", "record": "recorded", "propose": "proposed", "create": "created"}


def reference_for(transaction_type: int, transaction_id: str) -> str:
    """The payment's one clientReference: ``kyt-{type}-{txnId}`` when the id fits the reference
    character set and length, else ``kyt-{type}-h{sha256 of the id, 40 hex}`` (transaction ids
    may carry ``/`` and ``#`` and run to 128 characters; a reference may not)."""
    plain = f"kyt-{transaction_type}-{transaction_id}"
    if len(plain) <= REFERENCE_MAX and reference_problem(plain) is None:
        return plain
    digest = hashlib.sha256(transaction_id.encode()).hexdigest()[:40]
    return f"kyt-{transaction_type}-h{digest}"


def decide(rules: RuleSet, payment: Payment) -> Decision:
    """The rules' decision for ``payment`` (pure)."""
    if not payment.pending:
        return Decision("not_flagged", why="status is not pending refund")
    if payment.category == UNKNOWN:
        what = payment.kyt_result if payment.kyt_result is not None else "none"
        return Decision("denied", why=f"kytResult {what} is not mapped", unmapped=True)
    denied = {payment.category, payment.kyt_result} & rules.deny_results
    if denied or (payment.kyt_type is not None and payment.kyt_type in rules.deny_types):
        what = (
            f"kytResult {payment.kyt_result} ({payment.category})"
            if denied
            else f"kytType {payment.kyt_type}"
        )
        return Decision("denied", why=f"{what} is on the deny list")
    if payment.problems or payment.transaction_type is None or payment.transaction_id is None:
        return Decision("unreadable", why="; ".join(payment.problems))
    ref = reference_for(payment.transaction_type, payment.transaction_id)
    for rule in rules.rules:
        if rule.mode == "off" or not rule.matches(payment):
            continue
        effect = "shadow" if rule.mode == "shadow" else _EFFECT[rule.action]
        return Decision(effect, rule.id, rule.action, rule.mode, f"rule {rule.id}", reference=ref)
    return Decision("no_rule", why="no rule matched", reference=ref)


# --- loading -------------------------------------------------------------------------------


def load_rules(path: Path, categories: Iterable[str] = (), results: Iterable[str] = ()) -> RuleSet:
    """Read and validate a rules file; raises RulesError listing every problem.

    ``categories``/``results``: the configured kytResult categories and raw values
    (``REFUNDS_KYT_RESULTS``): a kyt_result naming neither is a problem (it could never match).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RulesError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from None
    return parse_rules(data, str(path), categories, results)


def parse_rules(
    data: bytes, source: str, categories: Iterable[str] = (), results: Iterable[str] = ()
) -> RuleSet:
    """A rules file's bytes validated (``source`` names it in messages): RulesError with every
    problem, or the RuleSet with the sha256 of exactly these bytes."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(source, [f"not a TOML file: {exc}"]) from None
    known = set(categories) | set(results)
    problems: list[str] = [
        f"unknown top-level key {key!r} (known: version, deny, rule)"
        for key in sorted(set(doc) - {"deny", "rule", "version"})
    ]
    deny_results, deny_types = _deny(doc.get("deny", {}), known, problems)
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        problems.append("rule: must be an array of tables ([[rule]])")
        raw_rules = []
    seen: set[str] = set()
    rules = [_rule(raw, n, seen, known, problems) for n, raw in enumerate(raw_rules, start=1)]
    if problems:
        raise RulesError(source, problems)
    digest = hashlib.sha256(data).hexdigest()
    return RuleSet(tuple(r for r in rules if r), deny_results, deny_types, digest, source)


def _deny(deny: Any, known: set[str], problems: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    if not isinstance(deny, dict):
        problems.append("deny: must be a table")
        return frozenset(), frozenset()
    for key in sorted(set(deny) - {"kyt_results", "kyt_types"}):
        problems.append(f"deny: unknown key {key!r} (known: kyt_results, kyt_types)")
    results = _words(deny.get("kyt_results", []), "deny.kyt_results", problems)
    types = _words(deny.get("kyt_types", []), "deny.kyt_types", problems)
    if known:
        for value in sorted(results - known):
            problems.append(f"deny.kyt_results: {value!r} is not a category or kytResult")
    return results, types


def _words(value: Any, where: str, problems: list[str]) -> frozenset[str]:
    """A list of strings or integers, as text."""
    if not isinstance(value, list):
        problems.append(f"{where}: must be a list")
        return frozenset()
    out = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int) or not str(item).strip():
            problems.append(f"{where}: {item!r} is not a string or an integer")
        else:
            out.add(str(item).strip())
    return frozenset(out)


def _amount(value: Any, where: str, problems: list[str]) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        problems.append(f"{where}: write the amount as a string ({value!r} is a float)")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        problems.append(f"{where}: must be a decimal string")
        return None
    try:
        number = Decimal(str(value).strip())
    except ArithmeticError:
        number = Decimal("NaN")
    if not number.is_finite() or number < 0:
        problems.append(f"{where}: {value!r} is not a non-negative decimal")
        return None
    return number


def _label(raw: dict[str, Any], n: int, seen: set[str], problems: list[str]) -> str:
    """How messages name the rule (its id, or its position when the id is bad)."""
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid or not set(rid) <= _ID_CHARS or len(rid) > 64:
        problems.append(f"rule #{n}: id is required (1 to 64 of A-Z a-z 0-9 - _ .)")
        return f"rule #{n}"
    if rid in seen:
        problems.append(f"rule {rid}: id used twice")
    seen.add(rid)
    return f"rule {rid}"


def _rule(raw: Any, n: int, seen: set[str], known: set[str], problems: list[str]) -> Rule | None:
    """One ``[[rule]]`` table; None when it has a problem (every problem is appended)."""
    if not isinstance(raw, dict):
        problems.append(f"rule #{n}: must be a table")
        return None
    before = len(problems)
    label = _label(raw, n, seen, problems)
    for key in sorted(set(raw) - set(_RULE_KEYS)):
        problems.append(f"{label}: unknown key {key!r} (known: {', '.join(_RULE_KEYS)})")
    action = raw.get("action")
    if action not in ACTIONS:
        problems.append(f"{label}: action {action!r} is not one of {', '.join(ACTIONS)}")
    mode = raw.get("mode", "shadow")
    if mode not in MODES:
        problems.append(f"{label}: mode {mode!r} is not one of {', '.join(MODES)}")
    when = raw.get("when", {})
    if not isinstance(when, dict):
        problems.append(f"{label}: when must be a table")
        when = {}
    lists = _conditions(when, label, known, problems)
    low = _amount(when.get("amount_min"), f"{label}: when.amount_min", problems)
    high = _amount(when.get("amount_max"), f"{label}: when.amount_max", problems)
    if low is not None and high is not None and low > high:
        problems.append(f"{label}: when.amount_min {low} is above amount_max {high}")
    if len(problems) > before:
        return None
    return Rule(str(raw["id"]), str(action), str(mode), lists, low, high)


def _conditions(
    when: dict[str, Any], label: str, known: set[str], problems: list[str]
) -> dict[str, frozenset[str]]:
    """The list conditions of a rule's ``when`` (currency and blockchain upper-cased)."""
    for key in sorted(set(when) - set(_CONDITIONS)):
        problems.append(f"{label}: unknown condition {key!r} (known: {', '.join(_CONDITIONS)})")
    lists: dict[str, frozenset[str]] = {}
    for name in (n for n in _LISTS if n in when):
        values = _words(when[name], f"{label}: when.{name}", problems)
        if name in ("currency", "blockchain"):
            values = frozenset(v.upper() for v in values)
        if not values:
            problems.append(f"{label}: when.{name} is empty (it could never match)")
        lists[name] = values
    for family in sorted(lists.get("family", frozenset()) - set(FAMILIES)):
        problems.append(f"{label}: when.family {family!r} is not one of {', '.join(FAMILIES)}")
    for value in sorted(lists.get("kyt_result", frozenset()) - known if known else set()):
        problems.append(
            f"{label}: when.kyt_result {value!r} is not a category or kytResult "
            "(REFUNDS_KYT_RESULTS)"
        )
    return lists
