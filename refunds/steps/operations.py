"""The three operations: Create, Confirm and Poll, each one step of one refund under its lease,
with at most one provider call (and the Get that reads an "already done" answer).

A Create whose outcome leads to Confirm goes on with Confirm in the same task, under the same
lease (its outcome's write begins the Confirm attempt), while the task's soft time limit leaves
room for it (``REFUNDS_CONFIRM_INLINE``): one message, one lease and two writes fewer per refund.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from refunds.context import Context
from refunds.decisions import (
    NextTask,
    Source,
    hold_before_confirm,
    known_status,
    stop_before_confirm_call,
)
from refunds.errors import MceError, McePermanentError
from refunds.mce.client import idempotency_key
from refunds.mce.contract import Code
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State
from refunds.steps.apply import CONFIRM_BEGUN, apply_step_answer, perform
from refunds.steps.failures import failed_attempt
from refunds.steps.lease import Body, fenced, locked, write
from refunds.steps.result import StepResult, log_extra
from refunds.store.locks import Begin

log = logging.getLogger("refunds.steps")

_CREATE = Begin(State.CREATING, (State.RECEIVED, State.CREATING), "create attempt 1")
# Only an attempt already under way (``confirming``: past the approval rule, or approved) is
# resumed with the lease; a Confirm task for a refund in ``created`` (after an operator's retry,
# a slow Create, or REFUNDS_CONFIRM_INLINE=false) first applies this worker's approval rule.
_CONFIRM = Begin(State.CONFIRMING, (State.CONFIRMING,), CONFIRM_BEGUN, requires="crypto_refund_id")


def _log_attempt(record: RefundRecord, operation: str) -> None:
    log.info(
        "%s attempt %d",
        operation,
        record.attempts,
        extra=log_extra(record, operation=operation, attempt=record.attempts),
    )


def _run(
    p: Context, ref: str, body: Body, fence: int | None = None, begin: Begin | None = None
) -> StepResult:
    """``body`` under the refund's lease; a result that continues ``inline`` (its write began
    the next step's attempt) runs that step's call here, under the same lock."""

    def then_inline(record: RefundRecord, begun: bool) -> StepResult:
        result = body(record, begun)
        while result.inline and result.next_task is not None and result.record is not None:
            result = _CONTINUE[result.next_task](p, result.record)
        return result

    return locked(p, ref, then_inline, fence, begin)


def create(p: Context, ref: str, fence: int | None = None) -> StepResult:
    """Create the provider refund, idempotently keyed by the intent's ``clientReference``.

    The attempt (``creating``, counted) is written with the step's lock, before the call. After
    an operator's retry (a new key generation) the reference is first looked up at the provider:
    an earlier, ambiguous Create may have made a refund, and a provider that de-duplicates on the
    idempotency key only would make a second one for the new key. A refund created without a
    hold is confirmed in the same task.
    """

    def body(record: RefundRecord, begun: bool) -> StepResult:
        if not begun:
            return StepResult(f"nothing to create in state {record.state}", record)
        _log_attempt(record, "create")
        if record.key_generation > 0 and not record.crypto_refund_id:
            try:
                found = p.client_for(record).get(client_reference=ref)
            except McePermanentError as exc:
                if exc.code != Code.NOT_FOUND:
                    return failed_attempt(p, record, exc)
            except MceError as exc:
                return failed_attempt(p, record, exc)
            else:
                log.info(
                    "retry: adopting the provider's refund for this reference",
                    extra=log_extra(record),
                )
                return apply_step_answer(p, record, found, source="lookup")
        return _post_then_apply(
            p,
            record,
            lambda: p.client_for(record).create(
                original_transaction_type=record.original_transaction_type,
                original_transaction_id=record.original_transaction_id,
                client_reference=ref,
                key=idempotency_key("create", ref, record.key_generation),
            ),
            source="create",
            # The provider already has a refund for this reference (from an attempt whose answer
            # we lost, after it forgot the key): find it instead of failing, and check it is ours.
            tolerated=Code.DUPLICATE_REFERENCE,
            look_up=lambda: p.client_for(record).get(client_reference=ref),
            look_up_source="lookup",
        )

    return _run(p, ref, body, fence, _CREATE)


def confirm(p: Context, ref: str, fence: int | None = None) -> StepResult:
    """Confirm the provider refund; an already-confirmed answer is read as success.

    The address sent is the merchant's (``refund_address``, never the provider's echo), or none:
    the body is the same bytes on every attempt. While the provider's status is one we do not
    know, the refund is read (Get), never confirmed (the attempt is then not begun).
    """

    def body(record: RefundRecord, begun: bool) -> StepResult:
        if begun:
            return _confirm_attempt(p, record)
        if record.state == State.CREATED and record.crypto_refund_id:
            return _confirm_created(p, record, record.crypto_refund_id)
        return StepResult(f"nothing to confirm in state {record.state}", record)

    return _run(p, ref, body, fence, _CONFIRM)


def _confirm_created(p: Context, record: RefundRecord, refund_id: str) -> StepResult:
    """A Confirm task for a refund in ``created``: read it while its provider status is one we do
    not know; hold it when this worker's approval rule says so (``decisions.hold_before_confirm``:
    the process that sent the task, an operator's CLI say, may not carry the thresholds); else
    begin the attempt and call."""
    if record.provider_status is not None and not known_status(record.provider_status):
        return _read(p, record, refund_id)
    held = hold_before_confirm(record, p.policy)
    if held is not None:
        return perform(p, record, held, actor="pipeline")
    begun = write(
        p,
        record,
        State.CONFIRMING,
        _CONFIRM.reason,
        last=False,
        fields={"attempts": 1},
        timer="set",
        due_in=p.settings.step_lease_seconds,
    ).record
    return _confirm_attempt(p, begun)


def _confirm_attempt(p: Context, record: RefundRecord) -> StepResult:
    """The Confirm call of an attempt already begun (``confirming``, counted, under the lock)."""
    ref, refund_id = record.client_reference, record.crypto_refund_id
    if record.state != State.CONFIRMING or not refund_id:  # not expected: begun records are
        return StepResult(f"nothing to confirm in state {record.state}", record)
    # The address for its chain, and an approval still for these terms: else never sent.
    stop = stop_before_confirm_call(record, p.policy)
    if stop is not None:
        return perform(p, record, stop, actor="pipeline")
    _log_attempt(record, "confirm")
    return _post_then_apply(
        p,
        record,
        lambda: p.client_for(record).confirm(
            crypto_refund_id=refund_id,
            refund_address=record.refund_address,
            key=idempotency_key("confirm", ref, record.key_generation),
        ),
        source="confirm",
        tolerated=Code.ALREADY_CONFIRMED,
        look_up=lambda: p.client_for(record).get(crypto_refund_id=refund_id),
        look_up_source="confirm",  # already confirmed: the Get's answer is a confirmation
    )


# Steps that continue in the task that began them (``StepResult.inline``), by name.
_CONTINUE: dict[NextTask, Callable[[Context, RefundRecord], StepResult]] = {
    "confirm": _confirm_attempt,
}


def _post_then_apply(
    p: Context,
    record: RefundRecord,
    post: Callable[[], RefundData],
    *,
    source: Source,
    tolerated: Code,
    look_up: Callable[[], RefundData],
    look_up_source: Source,
) -> StepResult:
    """One provider POST; the business error that means "already done" is answered with a Get.

    The fence first: the POST is sent only while the step's lease is still its own (read in
    Redis right before the call); otherwise it is abandoned, never sent twice at once."""
    if not fenced(p):
        return StepResult("lease lost before the call: not sent", record)
    try:
        try:
            data, said_by = post(), source
        except McePermanentError as exc:
            if exc.code != tolerated:
                raise
            log.info("%s: reading the refund instead", tolerated, extra=log_extra(record))
            data, said_by = look_up(), look_up_source
    except MceError as exc:
        return failed_attempt(p, record, exc)
    return apply_step_answer(p, record, data, source=said_by)


def poll(p: Context, ref: str, fence: int | None = None) -> StepResult:
    """Read the refund's provider status and follow it until it is final (held ones slowly)."""

    def body(record: RefundRecord, _begun: bool) -> StepResult:
        polled = (State.PROCESSING, State.AWAITING_APPROVAL)
        if record.state not in polled or not record.crypto_refund_id:
            return StepResult(f"nothing to poll in state {record.state}", record)
        return _read(p, record, record.crypto_refund_id)

    return _run(p, ref, body, fence)


def _read(p: Context, record: RefundRecord, refund_id: str) -> StepResult:
    try:
        data = p.client_for(record).get(crypto_refund_id=refund_id)
    except MceError as exc:
        return failed_attempt(p, record, exc, counted=False)
    return apply_step_answer(p, record, data, source="poll")


STEPS: dict[NextTask, Callable[[Context, str, int | None], StepResult]] = {
    "create": create,
    "confirm": confirm,
    "poll": poll,
}
