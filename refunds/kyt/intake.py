"""KYT intake: a verified, stored payment webhook goes through the detector and the rules, and
the decision is performed: logged and counted always, an intent submitted for ``propose`` and
``create`` in active mode.

Why in the receiver, not a task: the decision is pure and the only write is one intake script
(the record, its payment index entry and a timer due at once, which the scheduler tick hands
out), so MCE gets its answer in milliseconds, and a failure answers 500, so MCE delivers again.

One intent per original payment, however many webhooks arrive: the reference is derived from the
payment (``rules.reference_for``), the intake script refuses a second reference for one payment,
a repeated delivery of one notificationId is a "duplicate" before it gets here, and another
notificationId for the same payment finds the record and adds its id to ``notification_ids``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from config.settings.kyt import KytSettings
from refunds.errors import ConfigError, ConflictError, PaymentConflictError
from refunds.kyt.detector import Payment, Readings, detect, parse_body
from refunds.kyt.rules import Decision, RulesError, RuleSet, decide, load_rules
from refunds.models import RefundIntent
from refunds.store.kyt import KytStore

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

log = logging.getLogger("refunds.kyt")


@dataclass(frozen=True)
class Outcome:
    """What one payment webhook came to: the decision and, for an intent, whether it was new."""

    payment: Payment
    decision: Decision
    intent: str | None = None  # new | existing | held-by:{ref} | conflict | None (no intent)

    def to_dict(self) -> dict[str, Any]:
        return {**self.decision.to_dict(), "intent": self.intent}


def rules_from_settings(settings: KytSettings) -> RuleSet | None:
    """The rules file of ``settings`` validated (None: KYT intake off); ConfigError with every
    problem of a bad file."""
    path = settings.kyt_rules_file
    if path is None:
        return None
    try:
        return load_rules(path, settings.kyt_results.values(), settings.kyt_results.keys())
    except RulesError as exc:
        raise ConfigError(f"invalid configuration: REFUNDS_KYT_RULES_FILE: {exc}") from None


class KytIntake:
    """The detector's readings, the rules (None: intake off) and the store, once per process."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self.settings = settings
        self.ledger = ledger
        self.readings = Readings.from_settings(settings)
        self.rules = rules_from_settings(settings)
        self.store = KytStore(ledger.redis)

    def detect(self, body: bytes) -> Payment | None:
        """The payment a verified body describes (None: not a payment webhook)."""
        event = parse_body(body)
        return detect(self.readings, event) if event is not None else None

    def handle(self, payment: Payment, at: float) -> Outcome | None:
        """Decide and perform for one new payment webhook (stored already); None without rules."""
        self.store.remember(payment.notification_id, at)
        if self.rules is None:
            return None
        decision = decide(self.rules, payment)
        outcome = self._perform(payment, decision)
        self.store.keep_decision(payment.notification_id, outcome.to_dict())
        return outcome

    def _perform(self, payment: Payment, decision: Decision) -> Outcome:
        extra = {
            "notification_id": payment.notification_id,
            "client_reference": decision.reference,
            "kyt_rule": decision.rule,
            "effect": decision.effect,
            "payment": payment.details(),
        }
        if decision.rule is not None and decision.action and decision.mode:
            self.store.count_match(decision.rule, decision.action, decision.mode)
        if decision.effect == "denied":
            self.store.count_alert("denied")
            if decision.unmapped:
                self.store.count_alert("unmapped")
            log.error("KYT: payment denied, no refund made: %s", decision.why, extra=extra)
            return Outcome(payment, decision)
        if decision.effect == "unreadable":
            self.store.count_alert("unreadable")
            log.error("KYT: flagged payment unreadable: %s", decision.why, extra=extra)
            return Outcome(payment, decision)
        if not decision.makes_intent:
            log.info("KYT: %s (%s)", decision.effect, decision.why, extra=extra)
            return Outcome(payment, decision)
        intent = self._submit(payment, decision)
        log.info("KYT: %s, intent %s", decision.effect, intent, extra=extra)
        return Outcome(payment, decision, intent)

    def _submit(self, payment: Payment, decision: Decision) -> str:
        """Submit the payment's one intent (timer due at once: the tick hands it out)."""
        assert self.rules is not None and decision.reference is not None  # noqa: S101
        assert payment.transaction_type is not None and payment.transaction_id  # noqa: S101
        intent = RefundIntent.parse(
            {
                "originalTransactionType": payment.transaction_type,
                "originalTransactionId": payment.transaction_id,
                "clientReference": decision.reference,
            }
        )
        extra = {
            "kyt_rule": decision.rule,
            "kyt_action": decision.action,
            "kyt_rules_hash": self.rules.digest,
            "notification_ids": [payment.notification_id],
            "kyt_payment": payment.details(),
            "participant_code": payment.participant,
        }
        try:
            result = self.ledger.submit(intent, due_in=0.0, extra=extra)
        except PaymentConflictError as exc:
            log.warning(
                "KYT: the payment already has a refund under %s; no second one",
                exc.existing_reference,
                extra={"client_reference": decision.reference},
            )
            return f"held-by:{exc.existing_reference}"
        except ConflictError as exc:
            # The reference exists with other content (someone submitted it by hand): never
            # overwritten, never a 500 that MCE would redeliver for ever; a person looks.
            log.error(  # noqa: TRY400 - the message says it all, no traceback needed
                "KYT: %s; no intent made", exc, extra={"client_reference": decision.reference}
            )
            return "conflict"
        self.ledger.ensure_durable(self.settings)
        if result.created:
            return "new"
        self.store.add_notification(decision.reference, payment.notification_id)
        return "existing"
