"""Operator actions: approve, retry and cancel a refund, each recorded with who and why.

Every action is one compare-and-set transition, so it cannot race a worker: if a worker moved
the refund first, the action fails with a clear message and changes nothing (run it again after a
look at ``refunds status``). Webhooks parked for the refund are replayed after every action. The
caller sends the returned nudge (a Celery task name) if any.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings
from refunds.before_cancel import RefundReader, confirmed_at_mce
from refunds.decisions import (
    NOT_BULK_RETRIED,
    STEP_FOR_STATE,
    NextTask,
    hold_before_confirm,
    known_status,
    terms_of,
)
from refunds.errors import OperatorActionError, RefundsError, TransitionError
from refunds.mce.contract import STATUS_CREATED
from refunds.models import FINAL_STATES, RefundRecord, State, now
from refunds.policy import Policy, outbox_members
from refunds.store.ledger import Ledger, TimerAction
from refunds.webhooks import replay_with


@dataclass(frozen=True)
class ActionResult:
    """The record after an action, the step to nudge (None: none) and the dispatch id that
    nudge must carry (None: unfenced). A fenced nudge is a dispatch like the tick's: the refund's
    timer is one dispatch lease ahead, so a nudge lost with a crashing process costs
    ``REFUNDS_DISPATCH_LEASE_SECONDS``, and a late one the tick already replaced does nothing."""

    record: RefundRecord
    next_task: NextTask | None = None
    fence: int | None = None


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
    nudge, fence = result.next_task, result.fence
    for one in replayed:
        if one.next_task is not None:
            nudge, fence = one.next_task, None  # a webhook's nudge is unfenced
    return ActionResult(ledger.get(ref), nudge, fence)


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
    due_in: float | None = None,
    outbox: Sequence[str] = (),
    dispatch: bool = False,
) -> tuple[RefundRecord, int | None]:
    """One operator transition; ``due_in`` is seconds from Redis TIME (the one clock).

    ``dispatch``: the action nudges a step: the write records a new dispatch id (answered, the
    nudge carries it) and the timer is at most one dispatch lease ahead."""
    try:
        written = ledger.write(
            record,
            target,
            f"{action}: {reason}",
            actor=actor,
            fields=fields,
            timer=timer,
            due_in=due_in,
            outbox=outbox,
            dispatch=dispatch,
            history=True,
        )
        return written.record, written.fence if dispatch else None
    except TransitionError as exc:
        raise OperatorActionError(
            record.client_reference, action, f"it changed meanwhile ({exc.why}); look again"
        ) from None


def approve(
    ledger: Ledger, settings: Settings, ref: str, *, actor: str, reason: str
) -> ActionResult:
    """Release a refund held by the approval policy: it goes on to Confirm, for the amount,
    currency, address and chain it has now (``approved_terms``; a change holds it again)."""
    _check_words(ref, "approve", actor, reason)
    record = ledger.get(ref)
    if record.state != State.AWAITING_APPROVAL:
        raise OperatorActionError(ref, "approve", f"it is {record.state}, not awaiting_approval")
    new, fence = _move(
        ledger,
        record,
        State.CONFIRMING,
        action="approved",
        actor=actor,
        reason=reason,
        # Recorded as fields, so "already approved" never depends on the wording of a history line;
        # the terms approved too, so a change of any before Confirm holds the refund again.
        fields={
            "attempts": 0,
            "approved_by": actor.strip(),
            "approved_at": now(),
            "approved_terms": terms_of(
                record,
                amount=record.amount,
                currency=record.currency,
                blockchain=record.blockchain,
            ),
        },
        timer="set",
        due_in=min(settings.lease_seconds, settings.dispatch_lease),
        dispatch=True,
    )
    ledger.ensure_durable(settings)  # NotDurableError: the operator is told to retry
    return _replayed(ledger, settings, ActionResult(new, "confirm", fence))


def retry(ledger: Ledger, settings: Settings, ref: str, *, actor: str, reason: str) -> ActionResult:
    """Put a refund that needs attention back where its provider-side progress says it is.

    The idempotency-key generation goes up: the provider replays a stored answer (a business
    error included) for an old key, and a retry is meant to ask again. Asking again is safe: the
    clientReference still protects against a second provider refund, and the create step looks
    the reference up at the provider before it Creates again with the new key.

    The error the refund stopped with is evidence: it leaves ``last_error`` (a retry starts a
    fresh give-up window) but is kept, whole, in the retry's history line.
    """
    _check_words(ref, "retry", actor, reason)
    record = ledger.get(ref)
    if record.state != State.NEEDS_ATTENTION:
        raise OperatorActionError(
            ref, "retry", f"it is {record.state}; only needs_attention refunds are retried"
        )
    policy = Policy.from_settings(settings)
    if not record.crypto_refund_id:
        target = State.RECEIVED
    elif record.provider_status in (None, STATUS_CREATED) or not known_status(
        record.provider_status
    ):
        # A refund once held stays held until approved, whatever this process's thresholds (the
        # CLI's shell may not carry the workers' REFUNDS_APPROVAL_THRESHOLDS; a Confirm task's
        # worker applies its own rule again before calling, the same gate as here).
        # The gate's other stops (an address invalid for its chain) are the Confirm task's to
        # make again: the retry only decides between the hold and Confirm's door.
        was_held = any(h.to_state == State.AWAITING_APPROVAL for h in record.history)
        gate = hold_before_confirm(record, policy)
        held = (was_held and not record.approved_by) or (
            gate is not None and gate.target == State.AWAITING_APPROVAL
        )
        # A retry must not stand in for an approval the policy still asks for.
        target = State.AWAITING_APPROVAL if held else State.CREATED
    else:
        target = State.PROCESSING
    # A held refund is read slowly (it must not drift from the provider); others come due now.
    delay = (
        policy.held_poll_seconds if target == State.AWAITING_APPROVAL else settings.lease_seconds
    )
    nudge = None if target == State.AWAITING_APPROVAL else STEP_FOR_STATE.get(target)
    new, fence = _move(
        ledger,
        record,
        target,
        action="retried",
        actor=actor,
        reason=_with_evidence(reason, record.last_error),
        # A fresh give-up window: clearing last_error ends the failure streak it carried.
        fields={"attempts": 0, "key_generation": record.key_generation + 1, "last_error": None},
        timer="set",
        due_in=delay if nudge is None else min(delay, settings.dispatch_lease),
        dispatch=nudge is not None,
    )
    ledger.ensure_durable(settings)
    return _replayed(ledger, settings, ActionResult(new, nudge, fence))


def _with_evidence(reason: str, last_error: Mapping[str, Any] | None) -> str:
    """The retry's history reason with the error it lifts, so the evidence outlives the retry."""
    if not last_error:
        return reason
    shown = json.dumps(last_error, separators=(",", ":"), sort_keys=True, default=str)
    return f"{reason}; previous error: {shown}"


_CANCELLABLE = frozenset(
    {State.RECEIVED, State.CREATED, State.AWAITING_APPROVAL, State.NEEDS_ATTENTION}
)


def cancel(
    ledger: Ledger,
    settings: Settings,
    ref: str,
    *,
    actor: str,
    reason: str,
    provider: RefundReader | None = None,
) -> ActionResult:
    """Cancel a refund before Confirm. After Confirm it is the provider's refund to finish.

    MCE is asked first (``provider``, the MCE client; one is built from ``settings`` when not
    given): a refund MCE already confirmed is refused, whatever the ledger says.
    """
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
    if provider is None:
        from refunds.context import build_context  # noqa: PLC0415 - only a cancel needs MCE

        provider = build_context(settings).client
    refused = confirmed_at_mce(record, provider)
    if refused is not None:
        raise OperatorActionError(ref, "cancel", refused)
    new, _ = _move(
        ledger,
        record,
        State.CANCELLED,
        action="cancelled",
        actor=actor,
        reason=reason,
        outbox=outbox_members(ref),
    )
    ledger.ensure_durable(settings)
    return _replayed(ledger, settings, ActionResult(new, None))


ACTIONS = {"approve": approve, "retry": retry, "cancel": cancel}


# --- bulk retry (after an outage: ``refunds retry --state needs_attention``) ---------------------

RETRYABLE_STATES = frozenset({State.NEEDS_ATTENTION})


def error_code(record: RefundRecord) -> str | None:
    """The code a refund stopped with: the provider's ``code``, else the error's type name."""
    error = record.last_error or {}
    code = error.get("code") or error.get("type")
    return None if code is None else str(code)


def select_for_retry(
    ledger: Ledger,
    *,
    state: State | str = State.NEEDS_ATTENTION,
    code: str | None = None,
    since: float | None = None,
    chunk: int = 500,
) -> list[RefundRecord]:
    """The refunds in ``state`` that a bulk retry would take, oldest stop first.

    ``code``: only those whose ``last_error`` code (or error type) is this one (case-insensitive).
    ``since``: only those that reached the state at or after this time (epoch seconds; a record in
    ``needs_attention`` does not move, so its ``updated_at`` is when it stopped). Raises
    OperatorActionError for a state that retry does not apply to.
    """
    target = State(state)
    if target not in RETRYABLE_STATES:
        raise OperatorActionError(
            "*", "retry", f"only needs_attention refunds are retried, not {target}"
        )
    wanted = None if code is None else code.strip().upper()
    found = [
        record
        for record in ledger.get_many(ledger.references(target), chunk=chunk)
        if record.state == target
        and (wanted is None or (error_code(record) or "").upper() == wanted)
        and (since is None or record.updated_at >= since)
    ]
    return sorted(found, key=lambda r: (r.updated_at, r.client_reference))


@dataclass
class BulkRetryReport:
    """What a bulk retry did: ``retried`` (reference -> the step to nudge, None for a held one),
    ``skipped`` (reference -> why the single retry refused it), or with ``dry_run`` what it would
    retry (``retried``, nothing written)."""

    dry_run: bool
    retried: dict[str, NextTask | None] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    fences: dict[str, int] = field(default_factory=dict)  # reference -> its nudge's dispatch id

    def to_public(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "retried": len(self.retried),
            "skipped": len(self.skipped),
            "references": sorted(self.retried),
            "skippedReasons": dict(sorted(self.skipped.items())),
        }


def retry_many(
    ledger: Ledger,
    settings: Settings,
    records: Iterable[RefundRecord],
    *,
    actor: str,
    reason: str,
    code: str | None = None,
    dry_run: bool = False,
    on_each: Callable[[str, ActionResult | None, str | None], None] | None = None,
) -> BulkRetryReport:
    """Retry each of ``records`` through :func:`retry`, so every rule of a single retry holds
    (state check, approval hold, new key generation, compare-and-set, durability).

    ``on_each(ref, result, skipped_reason)`` is called after each one (progress bars, nudges); a
    refund that changed meanwhile, or whose write was not confirmed durable, is skipped with the
    reason and the rest go on. Raises OperatorActionError only for a missing actor or reason.

    A refund stopped for a human (``decisions.NOT_BULK_RETRIED``: another refund's news, an
    invalid amount or address, a bug) is skipped, with the reason, unless ``code`` (the filter
    the operator gave) names its code: an outage's sweep must not re-arm them.
    """
    _check_words("*", "retry", actor, reason)
    report = BulkRetryReport(dry_run=dry_run)
    named = None if code is None else code.strip().upper()
    for record in records:
        ref = record.client_reference
        stopped = error_code(record)
        if stopped in NOT_BULK_RETRIED and stopped != named:
            why = (
                f"stopped for a human ({stopped}); a bulk retry takes it only when its code "
                f"is named (code {stopped})"
            )
            report.skipped[ref] = why
            if on_each is not None:
                on_each(ref, None, why)
            continue
        if dry_run:
            report.retried[ref] = None
            if on_each is not None:
                on_each(ref, None, None)
            continue
        try:
            result = retry(ledger, settings, ref, actor=actor, reason=reason)
        except RefundsError as exc:
            why = exc.why if isinstance(exc, OperatorActionError) else str(exc)
            report.skipped[ref] = why
            if on_each is not None:
                on_each(ref, None, why)
            continue
        report.retried[ref] = result.next_task
        if result.fence is not None:
            report.fences[ref] = result.fence
        if on_each is not None:
            on_each(ref, result, None)
    return report
