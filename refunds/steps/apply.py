"""Applying an answer: decide what the provider's news does to a refund, then write the plan.

The one place where provider news moves a refund (a step's answer, a look-up, a webhook). The
decision (``refunds.decisions.decide``) answers the complete write plan; this module performs it
and asks nothing more of the decisions, the policy or the notification code: one compare-and-set
write (with its timer, its outbox entries, and the dispatch of its nudge), the counters, one log
line.
"""

from __future__ import annotations

import logging

from refunds.context import Context
from refunds.decisions import Decision, Source, decide
from refunds.errors import TransitionError
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State, now
from refunds.steps.lease import room_for_another_step, write
from refunds.steps.result import StepResult, log_extra
from refunds.store.ledger import Edge

log = logging.getLogger("refunds.steps")

#: The reason of a Confirm attempt's history line (begun with the lock, or inline after Create).
CONFIRM_BEGUN = "confirm attempt 1"


def apply_provider_update(
    p: Context,
    record: RefundRecord,
    data: RefundData,
    *,
    source: Source,
    actor: str = "pipeline",
) -> StepResult:
    """Decide what the provider's news does to ``record`` (``decisions.decide``), then write it.

    Raises TransitionError when the record moved meanwhile (the caller's race handling applies)
    or the edge is not allowed yet.
    """
    decision = decide(record, data, p.policy, source=source, now=now())
    return perform(p, record, decision, actor=actor)


#: How many times a step's answer is decided again against a record that moved meanwhile.
_REDECIDE = 3


def apply_step_answer(
    p: Context, record: RefundRecord, data: RefundData, *, source: Source
) -> StepResult:
    """A step's own answer (Create, Confirm, Get), applied even when someone wrote first.

    A webhook may adopt a refund id, or move the refund on, while the step's call is in flight;
    the step's write then meets a record that moved. The answer is not dropped as "superseded":
    it is decided again against the record as it now is, so an answer naming another refund
    stops it for a human, and one that agrees changes nothing or moves it on. A forbidden edge
    (a bug, not a race) and a record that is gone are raised as before.
    """
    for _ in range(_REDECIDE):
        try:
            return apply_provider_update(p, record, data, source=source)
        except TransitionError as exc:
            if exc.why == "not an allowed transition":
                raise
            fresh = p.ledger.find(record.client_reference)
            if fresh is None:
                raise
            log.info(
                "%s answer meets a record that moved (%s): deciding again",
                source,
                exc.why,
                extra=log_extra(fresh, state=str(fresh.state)),
            )
            record = fresh
    return apply_provider_update(p, record, data, source=source)


def perform(p: Context, record: RefundRecord, decision: Decision, *, actor: str) -> StepResult:
    """Write one Decision: one compare-and-set transition, its timer and its notifications."""
    ref = record.client_reference
    if not decision.write:
        log.info(
            "provider news: %s",
            decision.note,
            extra=log_extra(record, outcome=decision.outcome, state=str(record.state)),
        )
        return StepResult(decision.note, record, outcome=decision.outcome)
    if decision.conflict is not None:
        # Listed before it is marked: a crash in between lists a record, never hides a mark.
        p.ledger.flag_conflict(ref)
    new, fence, inline = _write_decision(p, record, decision, actor)
    # Counted once the compare-and-set took: a step that lost the race to a webhook (its write
    # refused, the news decided again) must not count the same stop twice.
    if decision.conflict is not None:
        p.stats.record_conflict(str(decision.conflict["kind"]))
    if decision.code is not None:
        p.stats.record_error(decision.code)
    _log_decision(new, decision)
    return StepResult(decision.note, new, decision.nudge, decision.outcome, fence, inline)


def _then(p: Context, decision: Decision) -> list[Edge]:
    """The next step's attempt to write with this decision, when the decision allows it to begin
    in the same write (Confirm after Create) and the running step has room for it (none: the
    next step goes out as a message)."""
    if not decision.inline or not room_for_another_step(p.settings):
        return []
    return [(State.CONFIRMING, CONFIRM_BEGUN, {"attempts": 1})]


def _write_decision(
    p: Context, record: RefundRecord, decision: Decision, actor: str
) -> tuple[RefundRecord, int | None, bool]:
    """Write ``decision``: answers the record as written, the fence its nudge must carry (None:
    unfenced or no nudge) and whether the nudged step was begun to run in this task."""
    then = _then(p, decision)
    if then:
        # The Confirm attempt is begun in the same write, its timer one short lease ahead (kept
        # there by the heartbeat) and the lock kept: the task goes on with the call.
        written = write(
            p,
            record,
            decision.target,
            decision.reason,
            last=False,
            fields=decision.fields,
            timer="set",
            due_in=p.settings.step_lease_seconds,
            actor=actor,
            outbox=decision.outbox,
            then=then,
        )
        return written.record, None, True
    # A nudge is a dispatch: fenced like the tick's, with the short "dispatched, not started"
    # lease, so a nudge lost with a dying worker costs seconds, and a late one that the tick
    # already replaced does nothing.
    due_in = decision.due_in
    if decision.dispatch and due_in is not None:
        due_in = min(due_in, p.settings.dispatch_lease)
    written = write(
        p,
        record,
        decision.target,
        decision.reason,
        fields=decision.fields,
        timer=decision.timer,
        due_in=due_in,
        actor=actor,
        outbox=decision.outbox,
        dispatch=decision.dispatch,
    )
    return written.record, written.fence if decision.dispatch else None, False


def _log_decision(new: RefundRecord, decision: Decision) -> None:
    extra = log_extra(
        new, outcome=decision.outcome, state=str(new.state), provider_status=new.provider_status
    )
    if decision.code is not None:
        message = f"needs attention: {decision.code} ({decision.note})"
        extra["code"] = decision.code
    elif decision.notify:
        message = f"refund final: {new.state}"
        extra["txn_hash"] = new.txn_hash
    elif decision.conflict is not None:
        message = f"provider news contradicts {new.state}: {decision.conflict['kind']}"
        extra["conflict"] = dict(decision.conflict)
    elif decision.target == State.AWAITING_APPROVAL and decision.reason:
        message = f"{decision.note}: {new.amount} {new.currency} ({decision.reason})"
    else:
        message = f"provider news: {decision.note}"
    log.log(decision.level, "%s", message, extra=extra)
