"""Plain functions the Celery tasks call: one step of one refund, at most one provider call.

Each step takes the refund's step lock, re-reads the record, does its one operation and records the
outcome with a compare-and-set transition that also sets the refund's next due time. The result
says which task (if any) to nudge next; the durable timer is the safety net for every nudge, so a
lost message or a crashed worker delays a refund but never loses it.

Errors: transient ones (network, timeouts, 429, 5xx, gateway pages) and authentication errors
(after the client's one replay) are recorded and retried on the timer with capped exponential
backoff and full jitter, honouring ``Retry-After``; after ``max_attempts`` in a row the refund goes
to ``needs_attention``. Permanent ones (400/403/404/422 business codes) go to ``needs_attention``
at once, with the provider's ``code`` and ``logId`` in ``last_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from refunds.context import Context
from refunds.errors import (
    MceError,
    McePermanentError,
    MceThrottledError,
    MceTransientError,
    TransitionError,
)
from refunds.mce.client import idempotency_key
from refunds.mce.contract import (
    STATUS_COMPLETED,
    STATUS_CREATED,
    STATUS_FAILED,
    STATUS_NAMES,
    STATUS_PROCESSING,
    STATUS_REJECTED,
    Code,
)
from refunds.mce.schemas import RefundData
from refunds.models import FINAL_STATES, RefundRecord, State, now
from refunds.notify import outbox_members

log = logging.getLogger("refunds.steps")

NextTask = Literal["create", "confirm", "poll"]

# Which step moves a refund on from each state (what the timer dispatches).
STEP_FOR_STATE: dict[State, NextTask] = {
    State.RECEIVED: "create",
    State.CREATING: "create",
    State.CREATED: "confirm",
    State.CONFIRMING: "confirm",
    State.PROCESSING: "poll",
}

# Forward order of the main line, so provider news never moves a refund backwards.
_RANK = {
    State.RECEIVED: 0,
    State.CREATING: 1,
    State.CREATED: 2,
    State.AWAITING_APPROVAL: 3,
    State.CONFIRMING: 4,
    State.PROCESSING: 5,
}
_FINAL_FOR_STATUS = {
    STATUS_COMPLETED: State.COMPLETED,
    STATUS_FAILED: State.FAILED,
    STATUS_REJECTED: State.REJECTED,
}


@dataclass(frozen=True)
class StepResult:
    note: str
    record: RefundRecord | None = None
    next_task: NextTask | None = None


def state_for_status(current: State, status: int | None) -> State:
    """Where provider news puts a refund: forward only, never out of a final state."""
    if current in FINAL_STATES:
        return current
    if status is not None and status in _FINAL_FOR_STATUS:
        return _FINAL_FOR_STATUS[status]
    if status == STATUS_PROCESSING:
        target = State.PROCESSING
    elif status == STATUS_CREATED:
        target = State.CREATED
    else:
        # Unknown (or absent) status: it exists at the provider, so at least "created"; keep
        # following it until a known final status arrives.
        target = State.CREATED
    if current in _RANK and _RANK[target] <= _RANK[current]:
        return current
    return target


def _extra(record: RefundRecord, **more: Any) -> dict[str, Any]:
    return {
        "client_reference": record.client_reference,
        "refund_id": record.crypto_refund_id,
        **more,
    }


def _locked(p: Context, ref: str, body: Callable[[RefundRecord], StepResult]) -> StepResult:
    token = p.ledger.lock(ref, p.lock_seconds)
    if token is None:
        # Another worker (or a webhook's nudge racing a step) holds it. Come back soon rather
        # than after a whole lease, in case the holder ends without a next step for us.
        p.ledger.due_soon(ref, 1.0)
        return StepResult("busy: another worker holds this refund")
    try:
        record = token.record  # read in the same round trip that took the lock
        if record is None:
            p.ledger.clear_timer(ref)
            return StepResult("unknown reference")
        return body(record)
    except TransitionError as exc:
        if exc.why != "not an allowed transition":
            # Someone else (a webhook, an operator) moved the record: their write wins.
            log.info("step lost a race: %s", exc, extra={"client_reference": ref})
            return StepResult("superseded")
        # A step asked for an edge the table forbids: a bug, not a race. Stop the refund where
        # a human sees it, instead of retrying the same step every lease.
        log.exception("refused transition", extra={"client_reference": ref})
        return _stop_for_bug(p, ref, exc)
    finally:
        p.ledger.unlock(ref, token)


def _stop_for_bug(p: Context, ref: str, exc: TransitionError) -> StepResult:
    record = p.ledger.find(ref)
    if record is None or record.is_final or record.state == State.NEEDS_ATTENTION:
        return StepResult("refused transition")
    error = {
        "type": "TransitionError",
        "message": str(exc),
        "status": None,
        "code": "INTERNAL_TRANSITION_REFUSED",
        "logId": None,
        "operation": "transition",
    }
    new = p.ledger.transition(
        record,
        State.NEEDS_ATTENTION,
        f"internal: {exc.why}",
        fields={"last_error": error},
        timer="clear",
    )
    return StepResult("needs attention", new)


# --- the three steps ---------------------------------------------------------------------------


def create(p: Context, ref: str) -> StepResult:
    """Create the provider refund, idempotently keyed by the intent's ``clientReference``."""

    def body(record: RefundRecord) -> StepResult:
        if record.state not in (State.RECEIVED, State.CREATING):
            return StepResult(f"nothing to create in state {record.state}", record)
        record = _begin(p, record, State.CREATING, "create")
        return _post_then_apply(
            p,
            record,
            lambda: p.client.create(
                original_transaction_type=record.original_transaction_type,
                original_transaction_id=record.original_transaction_id,
                client_reference=ref,
                key=idempotency_key("create", ref, record.key_generation),
            ),
            # The provider already has a refund for this reference (from an attempt whose answer
            # we lost, after it forgot the key): find it instead of failing.
            tolerated=Code.DUPLICATE_REFERENCE,
            look_up=lambda: p.client.get(client_reference=ref),
            reason="created at provider",
        )

    return _locked(p, ref, body)


def confirm(p: Context, ref: str) -> StepResult:
    """Confirm the provider refund; an already-confirmed answer is read as success."""

    def body(record: RefundRecord) -> StepResult:
        refund_id = record.crypto_refund_id
        if record.state not in (State.CREATED, State.CONFIRMING) or not refund_id:
            return StepResult(f"nothing to confirm in state {record.state}", record)
        record = _begin(p, record, State.CONFIRMING, "confirm")
        return _post_then_apply(
            p,
            record,
            lambda: p.client.confirm(
                crypto_refund_id=refund_id,
                refund_address=record.refund_address,
                key=idempotency_key("confirm", ref, record.key_generation),
            ),
            tolerated=Code.ALREADY_CONFIRMED,
            look_up=lambda: p.client.get(crypto_refund_id=refund_id),
            reason="confirmed at provider",
        )

    return _locked(p, ref, body)


def _post_then_apply(
    p: Context,
    record: RefundRecord,
    post: Callable[[], RefundData],
    *,
    tolerated: Code,
    look_up: Callable[[], RefundData],
    reason: str,
) -> StepResult:
    """One provider POST; the business error that means "already done" is answered with a Get."""
    try:
        try:
            data = post()
        except McePermanentError as exc:
            if exc.code != tolerated:
                raise
            log.info("%s: reading the refund instead", tolerated, extra=_extra(record))
            data = look_up()
    except MceError as exc:
        return _failed_attempt(p, record, exc)
    return apply_provider_update(p, record, data, reason)


def poll(p: Context, ref: str) -> StepResult:
    """Read the refund's provider status and follow it until it is final."""

    def body(record: RefundRecord) -> StepResult:
        if record.state != State.PROCESSING or not record.crypto_refund_id:
            return StepResult(f"nothing to poll in state {record.state}", record)
        try:
            data = p.client.get(crypto_refund_id=record.crypto_refund_id)
        except MceError as exc:
            return _failed_attempt(p, record, exc, counted=False)
        return apply_provider_update(p, record, data, "provider status", polled=True)

    return _locked(p, ref, body)


STEPS: dict[NextTask, Callable[[Context, str], StepResult]] = {
    "create": create,
    "confirm": confirm,
    "poll": poll,
}


# --- shared pieces -----------------------------------------------------------------------------


def _begin(p: Context, record: RefundRecord, working: State, operation: str) -> RefundRecord:
    """Record the attempt before the call, with a lease-long timer in case this worker dies."""
    attempts = 1 if record.state != working else record.attempts + 1
    reason = f"{operation} attempt 1" if record.state != working else ""
    log.info(
        "%s attempt %d",
        operation,
        attempts,
        extra=_extra(record, operation=operation, attempt=attempts),
    )
    return p.ledger.transition(
        record,
        working,
        reason,
        fields={"attempts": attempts},
        timer="set",
        due=now() + p.settings.lease_seconds,
    )


def _status_rank(status: int | None) -> int:
    """Order of provider statuses, to recognise an update older than what we already know."""
    if status is None:
        return -1
    if status in _FINAL_FOR_STATUS:
        return 3
    return {STATUS_CREATED: 0, STATUS_PROCESSING: 1}.get(status, 2)


def apply_provider_update(
    p: Context,
    record: RefundRecord,
    data: RefundData,
    reason: str,
    *,
    polled: bool = False,
    actor: str = "pipeline",
) -> StepResult:
    """Record what the provider said (a Create/Confirm/Get answer or a webhook) and decide what
    comes next. The one place where provider news moves a refund: forward only, final sticky."""
    if data.client_reference and data.client_reference != record.client_reference:
        # A provider answer for another reference must never be written onto this record.
        exc = McePermanentError(
            "provider answered with a refund of another clientReference",
            code="REFERENCE_MISMATCH",
            operation="apply",
        )
        return _failed_attempt(p, record, exc)
    if record.is_final:
        return StepResult(f"already final: {record.state}", record)
    status = data.status
    if _status_rank(status) < _status_rank(record.provider_status):
        return StepResult(f"stale update: status {status} after {record.provider_status}", record)
    if status is not None and status not in STATUS_NAMES:
        log.warning(
            "unknown provider status %s; following it until final",
            status,
            extra=_extra(record, provider_status=status),
        )
    target = state_for_status(record.state, status)
    fields: dict[str, Any] = {**data.ledger_fields(), "attempts": 0, "last_error": None}
    if polled:
        fields["polls"] = record.polls + 1
    why = f"{reason}: status {status}" if target != record.state else ""
    if target in FINAL_STATES:
        new = p.ledger.transition(
            record,
            target,
            why,
            fields=fields,
            actor=actor,
            outbox=outbox_members(p.settings, record.client_reference),
        )
        log.info(
            "refund final: %s", target, extra=_extra(new, state=str(target), provider_status=status)
        )
        return StepResult(f"final: {target}", new)
    if target == State.CREATED and p.settings.needs_approval(
        data.amount if data.amount is not None else record.amount, data.currency or record.currency
    ):
        new = p.ledger.transition(
            record,
            State.AWAITING_APPROVAL,
            f"{reason}: amount above the approval threshold",
            fields=fields,
            timer="clear",
            actor=actor,
        )
        log.info("held for approval", extra=_extra(new, state=str(new.state)))
        return StepResult("awaiting approval", new)
    next_task = STEP_FOR_STATE.get(target)
    if next_task == "poll":
        polls = fields.get("polls", record.polls)
        delay = p.settings.poll_delay(polls)
        nudge: NextTask | None = None  # the timer brings the next Get
    elif next_task is None:
        # Held (awaiting approval) or needing a human: no timer until someone acts.
        new = p.ledger.transition(record, target, why, fields=fields, actor=actor)
        return StepResult(f"now {target}", new)
    else:
        delay = p.settings.lease_seconds
        nudge = next_task
    new = p.ledger.transition(
        record, target, why, fields=fields, timer="set", due=now() + delay, actor=actor
    )
    return StepResult(f"now {target}", new, nudge)


def _failed_attempt(
    p: Context, record: RefundRecord, exc: MceError, *, counted: bool = True
) -> StepResult:
    """Retry on the timer, or stop in ``needs_attention`` with the provider's code.

    ``counted``: whether ``record.attempts`` already includes this attempt (create and confirm
    count it before the call, so a crash mid-call still counts; a poll counts it here).
    """
    attempts = record.attempts if counted else record.attempts + 1
    if isinstance(exc, MceThrottledError):
        # Never sent: not an attempt. Back on the timer for when the cluster's pace allows it.
        delay = exc.retry_after or p.settings.rate_limit_default_pause
        new = p.ledger.transition(
            record,
            record.state,
            "",
            fields={"attempts": max(0, attempts - 1)},
            timer="set",
            due=now() + delay,
        )
        return StepResult(f"throttled for {delay:.2f}s", new)
    error = exc.as_dict()
    p.stats.record_error(exc.code or type(exc).__name__)
    extra = _extra(
        record,
        operation=exc.operation,
        status=exc.status,
        code=exc.code,
        log_id=exc.log_id,
        attempt=attempts,
    )
    retryable = isinstance(exc, MceTransientError) or not isinstance(exc, McePermanentError)
    if retryable and attempts < p.settings.max_attempts:
        delay = max(p.backoff(attempts), exc.retry_after or 0.0)
        log.warning("%s; retrying in %.2fs", exc, delay, extra={**extra, "delay": round(delay, 3)})
        new = p.ledger.transition(
            record,
            record.state,
            "",
            fields={"last_error": error, "attempts": attempts},
            timer="set",
            due=now() + delay,
        )
        return StepResult(f"retry in {delay:.2f}s", new)
    why = (
        f"gave up after {attempts} attempts: {exc.code or type(exc).__name__}"
        if retryable
        else f"provider refused: {exc.code or type(exc).__name__}"
    )
    log.error("needs attention: %s (%s)", why, exc, extra=extra)
    new = p.ledger.transition(
        record,
        State.NEEDS_ATTENTION,
        why,
        fields={"last_error": error, "attempts": attempts},
        timer="clear",
    )
    return StepResult("needs attention", new)
