"""Domain rules the operators tune: the approval hold, how often refunds are read, read-lag grace,
how long transient failures are retried.

Settings carry only the raw values (``REFUNDS_APPROVAL_THRESHOLDS``, ``REFUNDS_POLL_SCHEDULE``,
``REFUNDS_HELD_POLL_SECONDS``, ``REFUNDS_NOT_FOUND_GRACE_SECONDS``, ``REFUNDS_GIVE_UP_AFTER``,
``REFUNDS_WEBHOOKS_EXPECTED``, ``REFUNDS_WEBHOOK_GRACE_SECONDS``, and which outcome notification
channels are configured); what they mean lives here, so the decision function
(``refunds.decisions``) and the operator actions apply one rule. A worker builds its Policy once,
in its ``Context``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from config.settings import Settings

#: The outbox entry of a final outcome (``outcome:{ref}``): one, fanned out on delivery.
OUTCOME_ENTRY = "outcome"
#: The outbox entry telling the merchant that MCE contradicts the outcome it was told
#: (``contradiction:{ref}``), fanned out like the outcome's.
CONTRADICTION_ENTRY = "contradiction"


def exact_amount(value: Any) -> Decimal | None:
    """``value`` as an exact, finite Decimal, or None (missing, unparsable, NaN, infinite).

    Floats are refused: by the time a float exists, ``1000.000000000000000001`` is ``1000.0``.
    """
    if value is None or isinstance(value, bool | float):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


@dataclass(frozen=True)
class Policy:
    """The approval thresholds (currency -> Decimal) and the read schedule, in seconds."""

    approval_thresholds: Mapping[str, Decimal] = field(default_factory=dict)
    poll_schedule: Sequence[float] = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
    held_poll_seconds: float = 3600.0
    lease_seconds: float = 90.0
    not_found_grace_seconds: float = 120.0
    give_up_after: float = 24 * 3600.0  # seconds a streak of transient failures may last
    # Seconds in which MCE's webhook normally arrives; None: no webhook is expected.
    webhook_grace_seconds: float | None = None
    # A rule-made refund (KYT intake) of action ``create`` waits for a person at Confirm
    # (``REFUNDS_KYT_CONFIRM_NEEDS_APPROVAL``; ``refunds.kyt.approval``).
    kyt_create_needs_approval: bool = True
    # A registry participant's own thresholds (participantCode -> currency -> Decimal), in place
    # of ``approval_thresholds`` for its refunds (refunds.participants).
    participant_thresholds: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            approval_thresholds={k.upper(): v for k, v in settings.approval_thresholds.items()},
            poll_schedule=tuple(settings.poll_schedule),
            held_poll_seconds=settings.held_poll_seconds,
            lease_seconds=settings.lease_seconds,
            not_found_grace_seconds=settings.not_found_grace_seconds,
            give_up_after=settings.give_up_after,
            webhook_grace_seconds=(
                settings.webhook_grace_seconds if settings.webhooks_expected else None
            ),
            kyt_create_needs_approval=settings.kyt_confirm_needs_approval,
        )

    def outbox_members(self, ref: str) -> tuple[str, ...]:
        """The outbox entry a final refund gets (:func:`outbox_members`)."""
        return outbox_members(ref)

    def needs_approval(
        self, amount: Any, currency: str | None, participant: str | None = None
    ) -> bool:
        """Whether Confirm waits for an operator. Fails closed.

        Without thresholds nothing is held. With thresholds: an empty or unknown currency is held
        (the provider did not say what it refunds, or it is a currency nobody set a limit for), so
        is a missing, negative, non-finite or unparsable amount; otherwise the amount is held when
        it exceeds the currency's threshold, compared as exact Decimals. A ``participant`` with
        thresholds of its own in the registry is judged by those instead.
        """
        thresholds = self.approval_thresholds
        if participant is not None and participant in self.participant_thresholds:
            thresholds = self.participant_thresholds[participant]
        if not thresholds:
            return False
        key = (currency or "").strip().upper()
        if key not in thresholds:
            return True
        number = exact_amount(amount)
        if number is None or number.is_signed():  # "-0.00" too
            return True
        return number > thresholds[key]

    def poll_delay(self, polls_done: int) -> float:
        """Seconds before the next Get, given how many Gets this refund has had (last repeats).

        Without webhooks the schedule is the path to a final state. With webhooks expected
        (``webhook_grace_seconds`` set) the webhook is the path and polling the safety net: the
        first Get waits out the grace window (never less than the schedule's first step), the
        later ones follow the schedule from its second step. A refund whose webhooks all arrive
        then costs Create + Confirm and no Get; one whose webhook is lost ends by polling, at the
        latest one grace window after the last step (``REFUNDS_WEBHOOK_GRACE_SECONDS``).
        """
        step = float(self.poll_schedule[min(polls_done, len(self.poll_schedule) - 1)])
        if polls_done == 0 and self.webhook_grace_seconds is not None:
            return max(float(self.webhook_grace_seconds), step)
        return step

    def gives_up(self, failing_since: float, at: float) -> bool:
        """Whether a streak of transient failures that began at ``failing_since`` (epoch seconds)
        has lasted ``give_up_after`` by ``at``: time, not a count of attempts, so an outage of
        minutes costs no refund its budget however many polls and retries it made meanwhile."""
        return at - failing_since >= self.give_up_after


def outbox_members(ref: str) -> tuple[str, ...]:
    """The outbox entry a final refund gets, whatever the writing process's settings:
    ``outcome:{ref}``. The worker that delivers it (``refunds.notify``) decides the channels from
    its own settings; a web process or a CLI without them still queues the outcome. No policy is
    needed to say it, so an operator action asks this, not a Policy built from settings."""
    return (f"{OUTCOME_ENTRY}:{ref}",)
