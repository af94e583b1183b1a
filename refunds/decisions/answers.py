"""The one decision for provider news: what a Create/Confirm/Get answer or a webhook does.

Pure: no Redis, no HTTP, no clock of its own (``now`` is passed in). The steps and the webhook
handler call :func:`decide`, then write what it says with one compare-and-set transition; the
Decision it answers is the complete write plan (``refunds.decisions.plan``).

The rules (DESIGN principle 7, contract section 5 "What an answer means"):

- The merchant's intent is never replaced: what the provider reports is written to fields of its
  own (``provider_refund_address``, ``provider_transaction_id``, amounts, fees, hash, status).
- News about another refund, with an invalid amount, or contradicting a final state is refused
  (``refunds.decisions.stops``).
- Forward only: older news is *stale* and changes nothing.
- ``needs_attention`` is a stop: only an operator's action or final news about the same refund
  moves it; other news is recorded beside the stop, which keeps its error.
- A successful Confirm (or an "already confirmed" answer) means "confirmed: follow it": the
  refund goes to ``processing`` and is polled, whatever status the answer carries; the step that
  just succeeded is never nudged again.
- An unknown status is followed with Get (poll timer), never answered with Confirm.
- A refund going to ``created`` is held in ``awaiting_approval`` when the policy says so (fails
  closed, ``refunds.decisions.holds``); held refunds are read slowly so they cannot drift from the
  provider, and take news that makes them processing or final.
- A final refund's outcome notifications are part of its write (``Decision.outbox``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from refunds.decisions.holds import hold_created_news
from refunds.decisions.plan import (
    LABEL,
    RANK,
    STATE_FOR_STATUS,
    Decision,
    Source,
    known_status,
    state_for_status,
    status_rank,
)
from refunds.decisions.stops import refused, stopped_for_human
from refunds.mce.schemas import RefundData
from refunds.models import FINAL_STATES, RefundRecord, State
from refunds.policy import Policy


def decide(
    record: RefundRecord, news: RefundData, policy: Policy, *, source: Source, now: float
) -> Decision:
    """What ``news`` (the provider's refund object, from ``source``) does to ``record``.

    ``source``: "create" (Create's answer), "lookup" (Get by clientReference after Create's
    duplicate-reference error, or before a re-Create), "confirm" (Confirm's answer, or the Get
    after an already-confirmed error), "poll" (Get by id), "webhook". ``now``: epoch seconds.
    """
    decision = refused(record, news, source, now)
    if decision is None:
        decision = _follow(record, news, policy, source=source, now=now)
    return _planned(record, decision, policy)


def _planned(record: RefundRecord, decision: Decision, policy: Policy) -> Decision:
    """The decision with what its writer derives from it: the outbox entries of a final outcome,
    whether the write dispatches its nudge, and whether that nudge may begin in the same write
    (Confirm after Create, with the refund's id and a provider status we know)."""
    if not decision.write:
        return decision
    fields = decision.fields
    status = fields.get("provider_status", record.provider_status)
    has_id = bool(fields.get("crypto_refund_id") or record.crypto_refund_id)
    return replace(
        decision,
        outbox=(
            policy.outbox_members(record.client_reference) if decision.notify else decision.outbox
        ),
        dispatch=decision.nudge is not None and decision.timer == "set",
        inline=(
            decision.nudge == "confirm"
            and decision.target == State.CREATED
            and has_id
            and known_status(status)
        ),
    )


def _follow(
    record: RefundRecord, news: RefundData, policy: Policy, *, source: Source, now: float
) -> Decision:
    """News about this refund, for a record that is not final: forward only."""
    status = news.status
    polls = record.polls + 1 if source == "poll" else record.polls
    stale = _stale(record, status, policy, source=source, polls=polls)
    if stale is not None:
        return stale
    fields: dict[str, Any] = {**news.ledger_fields(), "attempts": 0, "last_error": None}
    if record.crypto_refund_id is None:
        fields["provider_seen_at"] = now
    if source == "poll":
        fields["polls"] = polls
    said = STATE_FOR_STATUS.get(status) if status is not None else None
    if record.state == State.NEEDS_ATTENTION and (
        stopped_for_human(record) or said not in FINAL_STATES
    ):
        # A stop: only an operator's action, or final news about this same refund (identity
        # and amounts already checked by ``refused``), moves it. Anything else is recorded
        # beside the stop; its error stays and nothing is sent.
        return _record_only(record, fields, status)
    if said in FINAL_STATES:
        assert said is not None  # noqa: S101 - narrowed for mypy
        return Decision(
            "applied",
            said,
            f"final: {said}",
            reason=f"{LABEL[source]}: status {status}",
            fields=fields,
            timer="clear",
            notify=True,
        )
    target = _target(record.state, status, source)
    if target == State.CREATED and record.state != State.CREATED:
        # The gate before Confirm (``holds``): every check a refund passes on its way there.
        held = hold_created_news(record, news, policy, source=source, fields=fields)
        if held is not None:
            return held
    return _moved(record, target, status, policy, source=source, fields=fields, polls=polls)


def _stale(
    record: RefundRecord, status: int | None, policy: Policy, *, source: Source, polls: int
) -> Decision | None:
    """Older than what we know (a reordered webhook, a lagging replica): change nothing, but a
    poll still books the next one. None: not stale. A Confirm answer is never stale (it says the
    refund is confirmed, whatever status it carries)."""
    ours, theirs = status_rank(record.provider_status), status_rank(status)
    if source == "confirm" or ours is None or theirs is None or theirs >= ours:
        return None
    note = f"stale: status {status} after {record.provider_status}"
    if source == "poll":
        return Decision(
            "stale",
            record.state,
            note,
            fields={"polls": polls},
            timer="set",
            due_in=_poll_due(policy, record.state, polls),
        )
    return Decision("stale", record.state, note, write=False)


def _target(current: State, status: int | None, source: Source) -> State:
    """Where non-final news moves a refund that is not final."""
    if source == "confirm":
        # Confirmed: follow it, whatever status the answer carries (MCE may confirm
        # asynchronously and answer 1 for a while). Never Confirm again.
        return State.PROCESSING
    if status is None and source not in ("create", "lookup"):
        target = current
        if current in RANK and RANK[current] < RANK[State.CREATED]:
            target = State.CREATED
        return target
    return state_for_status(current, status)


def _moved(
    record: RefundRecord,
    target: State,
    status: int | None,
    policy: Policy,
    *,
    source: Source,
    fields: dict[str, Any],
    polls: int,
) -> Decision:
    """Non-final news that moves (or keeps) a refund on the main line: the timer and next step."""
    current = record.state
    reason = f"{LABEL[source]}: status {status}" if target != current else ""
    note = f"now {target}"
    if target in (State.PROCESSING, State.AWAITING_APPROVAL):
        return Decision(
            "applied",
            target,
            note,
            reason=reason,
            fields=fields,
            timer="set",
            due_in=_poll_due(policy, target, polls),
        )
    if target != State.CREATED:
        # Still working (confirming) or stopped for a human: record the view, keep the timer.
        return Decision("applied", target, note, reason=reason, fields=fields)
    if status is not None and not known_status(status):
        # Unknown status: read it again later (the confirm step reads while the status is
        # unknown); never answer it with Confirm.
        return Decision(
            "applied",
            target,
            f"unknown provider status {status}: following it",
            reason=reason,
            fields=fields,
            timer="set",
            due_in=policy.poll_delay(polls),
            level=logging.WARNING,
        )
    if source == "webhook" and target == current:
        return Decision("applied", target, note, fields=fields)
    return Decision(
        "applied",
        target,
        note,
        reason=reason,
        fields=fields,
        timer="set",
        due_in=policy.lease_seconds,
        nudge="confirm",
    )


def _poll_due(policy: Policy, state: State, polls: int) -> float:
    return (
        policy.held_poll_seconds if state == State.AWAITING_APPROVAL else policy.poll_delay(polls)
    )


def _record_only(record: RefundRecord, fields: dict[str, Any], status: int | None) -> Decision:
    """A refund stopped for a human keeps its stop (and its error) while its view is updated."""
    kept = {k: v for k, v in fields.items() if k not in ("attempts", "last_error")}
    return Decision("applied", record.state, f"kept for a human: status {status}", fields=kept)
