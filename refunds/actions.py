"""Operator actions: approve, retry and cancel a refund, each recorded with who and why.

Every action is one compare-and-set transition, so it cannot race a worker: if a worker moved
the refund first, the action fails with a clear message and changes nothing (run it again after a
look at ``refunds status``). Webhooks parked for the refund are replayed after every action. The
caller sends the returned nudge (a Celery task name) if any.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from refunds.decisions import STEP_FOR_STATE, NextTask, known_status
from refunds.errors import OperatorActionError, TransitionError
from refunds.mce.contract import STATUS_CREATED
from refunds.models import FINAL_STATES, RefundRecord, State, now
from refunds.notify import outbox_members
from refunds.policy import Policy
from refunds.store.connection import ensure_durable
from refunds.store.ledger import Ledger, TimerAction
from refunds.webhooks import replay_with


@dataclass(frozen=True)
class ActionResult:
    record: RefundRecord
    next_task: NextTask | None = None


def _replayed(ledger: Ledger, settings: Settings, result: ActionResult) -> ActionResult:
    """The action's result after the webhooks parked for the refund were tried again.

    An action moves the record, and a webhook parked before it (the refund could not take it
    then) may apply now: the same replay as after every step (``webhooks.replay_with``). The
    record answered is the one after the replay; the nudge is the last one any of them asked for.
    """
    ref = result.record.client_reference
    replayed = replay_with(ledger, settings, ref)
    if not replayed:
        return result
    nudge = result.next_task
    for one in replayed:
        nudge = one.next_task or nudge
    return ActionResult(ledger.get(ref), nudge)


def _check_words(ref: str, action: str, actor: str, reason: str) -> None:
    if not actor.strip():
        raise OperatorActionError(ref, action, "say who you are (--by)")
    if not reason.strip():
        raise OperatorActionError(ref, action, "say why (--reason); it goes into the history")


def _move(
    ledger: Ledger,
    record: RefundRecord,
    target: State,
    *,
    action: str,
    actor: str,
    reason: str,
    fields: Mapping[str, Any] | None = None,
    timer: TimerAction = "keep",
    due: float | None = None,
    outbox: Sequence[str] = (),
) -> RefundRecord:
    try:
        return ledger.transition(
            record,
            target,
            f"{action}: {reason}",
            actor=actor,
            fields=fields,
            timer=timer,
            due=due,
            outbox=outbox,
        )
    except TransitionError as exc:
        raise OperatorActionError(
            record.client_reference, action, f"it changed meanwhile ({exc.why}); look again"
        ) from None


def approve(
    ledger: Ledger, settings: Settings, ref: str, *, actor: str, reason: str
) -> ActionResult:
    """Release a refund held by the approval policy: it goes on to Confirm."""
    _check_words(ref, "approve", actor, reason)
    record = ledger.get(ref)
    if record.state != State.AWAITING_APPROVAL:
        raise OperatorActionError(ref, "approve", f"it is {record.state}, not awaiting_approval")
    new = _move(
        ledger,
        record,
        State.CONFIRMING,
        action="approved",
        actor=actor,
        reason=reason,
        # Recorded as fields, so "already approved" never depends on the wording of a history line.
        fields={"attempts": 0, "approved_by": actor.strip(), "approved_at": now()},
        timer="set",
        due=now() + settings.lease_seconds,
    )
    ensure_durable(ledger.redis, settings)  # NotDurableError: the operator is told to retry
    return _replayed(ledger, settings, ActionResult(new, "confirm"))


def retry(ledger: Ledger, settings: Settings, ref: str, *, actor: str, reason: str) -> ActionResult:
    """Put a refund that needs attention back where its provider-side progress says it is.

    The idempotency-key generation goes up: the provider replays a stored answer (a business
    error included) for an old key, and a retry is meant to ask again. Asking again is safe: the
    clientReference still protects against a second provider refund, and the create step looks
    the reference up at the provider before it Creates again with the new key.
    """
    _check_words(ref, "retry", actor, reason)
    record = ledger.get(ref)
    if record.state != State.NEEDS_ATTENTION:
        raise OperatorActionError(
            ref, "retry", f"it is {record.state}; only needs_attention refunds are retried"
        )
    if not record.crypto_refund_id:
        target = State.RECEIVED
    elif record.provider_status in (None, STATUS_CREATED) or not known_status(
        record.provider_status
    ):
        policy = Policy.from_settings(settings)
        held = policy.needs_approval(record.amount, record.currency) and not record.approved_by
        # A retry must not stand in for an approval the policy still asks for.
        target = State.AWAITING_APPROVAL if held else State.CREATED
    else:
        target = State.PROCESSING
    # A held refund is read slowly (it must not drift from the provider); others come due now.
    delay = (
        Policy.from_settings(settings).held_poll_seconds
        if target == State.AWAITING_APPROVAL
        else settings.lease_seconds
    )
    new = _move(
        ledger,
        record,
        target,
        action="retried",
        actor=actor,
        reason=reason,
        fields={"attempts": 0, "key_generation": record.key_generation + 1},
        timer="set",
        due=now() + delay,
    )
    ensure_durable(ledger.redis, settings)
    nudge = None if target == State.AWAITING_APPROVAL else STEP_FOR_STATE.get(target)
    return _replayed(ledger, settings, ActionResult(new, nudge))


_CANCELLABLE = frozenset(
    {State.RECEIVED, State.CREATED, State.AWAITING_APPROVAL, State.NEEDS_ATTENTION}
)


def cancel(
    ledger: Ledger, settings: Settings, ref: str, *, actor: str, reason: str
) -> ActionResult:
    """Cancel a refund before Confirm. After Confirm it is the provider's refund to finish."""
    _check_words(ref, "cancel", actor, reason)
    record = ledger.get(ref)
    if record.state in FINAL_STATES:
        raise OperatorActionError(ref, "cancel", f"it is already final ({record.state})")
    confirm_tried = any(h.to_state == State.CONFIRMING for h in record.history)
    if (
        record.state not in _CANCELLABLE
        or confirm_tried
        or (record.provider_status not in (None, STATUS_CREATED))
    ):
        why = (
            "a Create is in flight; wait a moment and look again"
            if record.state == State.CREATING
            else "it was (or may have been) confirmed at the provider; it is the provider's "
            "refund to finish"
        )
        raise OperatorActionError(ref, "cancel", why)
    new = _move(
        ledger,
        record,
        State.CANCELLED,
        action="cancelled",
        actor=actor,
        reason=reason,
        outbox=outbox_members(settings, ref),
    )
    ensure_durable(ledger.redis, settings)
    return _replayed(ledger, settings, ActionResult(new, None))


ACTIONS = {"approve": approve, "retry": retry, "cancel": cancel}
