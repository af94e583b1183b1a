"""The one decision for provider news: what a Create/Confirm/Get answer or a webhook does.

Pure: no Redis, no HTTP, no clock of its own (``now`` is passed in). The steps and the webhook
handler call :func:`decide`, then write what it says with one compare-and-set transition.

The rules (DESIGN principle 7, contract section 5 "What an answer means"):

- The merchant's intent is never replaced: what the provider reports is written to fields of its
  own (``provider_refund_address``, ``provider_transaction_id``, amounts, fees, hash, status).
- Identity first. Once the record knows its ``cryptoRefundId``, news naming another id, or naming
  another ``originalTransactionId`` or ``clientReference`` (on any path, the duplicate-reference
  look-up included), is a *mismatch*: ``needs_attention`` with code ``PROVIDER_MISMATCH`` and both
  values in ``last_error``; nothing of the news is adopted.
- A provider amount or fee that is not a finite, non-negative decimal is an *anomaly*:
  ``needs_attention`` with code ``PROVIDER_AMOUNT_INVALID``.
- Forward only, final sticky. News that contradicts a final state (completed after cancelled,
  completed after failed, failed after completed, ...) keeps the final state and marks the record
  with a ``conflict`` for a human; older news is *stale* and changes nothing.
- A successful Confirm (or an "already confirmed" answer) means "confirmed: follow it": the
  refund goes to ``processing`` and is polled, whatever status the answer carries; the step that
  just succeeded is never nudged again.
- An unknown status is followed with Get (poll timer), never answered with Confirm.
- A refund going to ``created`` is held in ``awaiting_approval`` when the policy says so (fails
  closed); held refunds are read slowly so they cannot drift from the provider, and take news that
  makes them processing or final.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from refunds.addresses import ADDRESS_INVALID, problem_for_chain
from refunds.mce.contract import (
    STATUS_COMPLETED,
    STATUS_CREATED,
    STATUS_FAILED,
    STATUS_NAMES,
    STATUS_PROCESSING,
    STATUS_REJECTED,
)
from refunds.mce.schemas import RefundData
from refunds.models import FINAL_STATES, RefundRecord, State, iso
from refunds.policy import Policy

NextTask = Literal["create", "confirm", "poll"]
Source = Literal["create", "lookup", "confirm", "poll", "webhook"]
Timer = Literal["keep", "set", "clear"]
Outcome = Literal["applied", "stale", "mismatch", "anomaly", "conflict"]

PROVIDER_MISMATCH = "PROVIDER_MISMATCH"
PROVIDER_AMOUNT_INVALID = "PROVIDER_AMOUNT_INVALID"

# Which step moves a refund on from each state (what the timer dispatches). A held refund is
# read (polled) slowly; a ``created`` one whose provider status is unknown is read, not confirmed,
# by the confirm step (see ``steps.confirm``).
STEP_FOR_STATE: dict[State, NextTask] = {
    State.RECEIVED: "create",
    State.CREATING: "create",
    State.CREATED: "confirm",
    State.AWAITING_APPROVAL: "poll",
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
_STATE_FOR_STATUS = {
    STATUS_CREATED: State.CREATED,
    STATUS_PROCESSING: State.PROCESSING,
    STATUS_COMPLETED: State.COMPLETED,
    STATUS_FAILED: State.FAILED,
    STATUS_REJECTED: State.REJECTED,
}
_STATUS_WORD = {
    STATUS_CREATED: "created",
    STATUS_PROCESSING: "processing",
    STATUS_COMPLETED: "completed",
    STATUS_FAILED: "failed",
    STATUS_REJECTED: "rejected",
}
_LABEL: dict[Source, str] = {
    "create": "created at provider",
    "lookup": "found at provider by clientReference",
    "confirm": "confirmed at provider",
    "poll": "provider status",
    "webhook": "webhook",
}
# Codes of a stop that only a human lifts: later provider news does not move such a record.
_HUMAN_STOPS = frozenset({PROVIDER_MISMATCH, PROVIDER_AMOUNT_INVALID, ADDRESS_INVALID})


@dataclass(frozen=True)
class Decision:
    """What to write for one piece of provider news.

    ``write`` False: change nothing at all. Otherwise one transition to ``target`` with ``reason``
    ('' when the state stays) and ``fields`` (RefundRecord attribute -> value, None deletes);
    ``timer``: "set" to ``now + due_in`` seconds, "clear", or "keep"; ``nudge``: the task to send
    at once (the timer is the safety net); ``notify``: queue the outcome notifications (final).
    ``code`` names a stop for a human; ``conflict`` is the mark written for a contradiction.
    """

    outcome: Outcome
    target: State
    note: str
    write: bool = True
    reason: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    timer: Timer = "keep"
    due_in: float | None = None
    nudge: NextTask | None = None
    notify: bool = False
    code: str | None = None
    conflict: Mapping[str, Any] | None = None
    level: int = logging.INFO


def continue_inline(elapsed: float, call_budget: float, soft_limit: float) -> bool:
    """Whether a task that has run ``elapsed`` seconds may go on with one more step in itself.

    A step may need two calls (a token fetch, then its own), each allowed ``call_budget`` seconds
    (connect + read timeouts); Celery's soft time limit (``soft_limit`` seconds) must not cut one
    short (the provider may apply what we gave up on), so the next step runs here only while both
    still fit (the same budget ``config.settings`` checks for one step). All in seconds.
    """
    return elapsed + 2 * call_budget < soft_limit


def known_status(status: int | None) -> bool:
    return status is not None and status in STATUS_NAMES


def state_for_status(current: State, status: int | None) -> State:
    """Where a status puts a refund, ignoring who said it: forward only, never out of final.

    Unknown (or absent) status: it exists at the provider, so at least ``created``.
    """
    if current in FINAL_STATES:
        return current
    target = _STATE_FOR_STATUS.get(status) if status is not None else None
    if target is None:
        target = State.CREATED
    if target in FINAL_STATES:
        return target
    if current in _RANK and _RANK[target] <= _RANK[current]:
        return current
    return target


def _status_rank(status: int | None) -> int | None:
    """Order of known provider statuses (None: absent or unknown, not comparable)."""
    if not known_status(status):
        return None
    if status in (STATUS_COMPLETED, STATUS_FAILED, STATUS_REJECTED):
        return 2
    return 0 if status == STATUS_CREATED else 1


def _error(code: str, message: str, source: Source, **more: Any) -> dict[str, Any]:
    """A ``last_error`` shaped like ``MceError.as_dict`` plus the details of the stop."""
    return {
        "type": "ProviderNews",
        "message": message,
        "status": None,
        "code": code,
        "logId": None,
        "operation": source,
        **more,
    }


def _mismatch(record: RefundRecord, news: RefundData) -> tuple[str, str, str] | None:
    """(field, ours, theirs) when the news is about another refund than the record's."""
    if news.client_reference and news.client_reference != record.client_reference:
        return "clientReference", record.client_reference, news.client_reference
    if record.crypto_refund_id and news.crypto_refund_id != record.crypto_refund_id:
        return "cryptoRefundId", record.crypto_refund_id, news.crypto_refund_id
    theirs = news.original_transaction_id
    if theirs and theirs != record.original_transaction_id:
        return "originalTransactionId", record.original_transaction_id, theirs
    return None


def _bad_money(news: RefundData) -> dict[str, str]:
    bad = dict(news.invalid_money)
    # is_signed, not < 0: "-0.00" is a negative amount as sent, and no refund of ours is one.
    if news.amount is not None and news.amount.is_signed():
        bad["amount"] = str(news.amount)
    if news.fee_amount is not None and news.fee_amount.is_signed():
        bad["feeAmount"] = str(news.fee_amount)
    return bad


def _conflict(
    record: RefundRecord, news: RefundData, source: Source, now: float, kind: str
) -> Decision:
    mark: dict[str, Any] = {
        "kind": kind,
        "providerStatus": news.status,
        "at": iso(now),
        "source": source,
        "cryptoRefundId": news.crypto_refund_id,
    }
    if news.txn_hash:
        mark["txnHash"] = news.txn_hash
    return Decision(
        "conflict",
        record.state,
        f"conflict: {kind} (kept {record.state})",
        fields={"conflict": mark},
        timer="clear",
        conflict=mark,
        level=logging.ERROR,
    )


def _on_final(record: RefundRecord, news: RefundData, source: Source, now: float) -> Decision:
    """A final record takes no news; news that contradicts it is marked, older news is stale."""
    status = news.status
    said = _STATE_FOR_STATUS.get(status) if status is not None else None
    if record.state == State.CANCELLED:
        # We cancelled before Confirm: "created" or "rejected/cancelled" agrees; anything that
        # says the provider went on (processing, completed, failed) contradicts it.
        agrees = said in (None, State.CREATED, State.REJECTED)
    else:
        agrees = said is None or said == record.state or said not in FINAL_STATES
    if agrees:
        return Decision("stale", record.state, f"already final: {record.state}", write=False)
    return _conflict(record, news, source, now, f"{_STATUS_WORD[status or 0]}_after_{record.state}")


def decide(
    record: RefundRecord, news: RefundData, policy: Policy, *, source: Source, now: float
) -> Decision:
    """What ``news`` (the provider's refund object, from ``source``) does to ``record``.

    ``source``: "create" (Create's answer), "lookup" (Get by clientReference after Create's
    duplicate-reference error, or before a re-Create), "confirm" (Confirm's answer, or the Get
    after an already-confirmed error), "poll" (Get by id), "webhook". ``now``: epoch seconds.
    """
    stop = _mismatch(record, news)
    if stop is not None:
        name, ours, theirs = stop
        if record.is_final:
            return _conflict(record, news, source, now, f"{name}_mismatch")
        message = f"provider reported {name} {theirs!r}; this refund's is {ours!r}"
        return Decision(
            "mismatch",
            State.NEEDS_ATTENTION,
            f"mismatch: {name}",
            reason=f"{_LABEL[source]}: {PROVIDER_MISMATCH} ({name})",
            fields={
                "last_error": _error(
                    PROVIDER_MISMATCH, message, source, field=name, ours=ours, theirs=theirs
                ),
                "attempts": 0,
            },
            timer="clear",
            code=PROVIDER_MISMATCH,
            level=logging.ERROR,
        )
    bad = _bad_money(news)
    if bad:
        if record.is_final:
            return _conflict(record, news, source, now, "amount_invalid")
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(bad.items()))
        return Decision(
            "anomaly",
            State.NEEDS_ATTENTION,
            "invalid provider amount",
            reason=f"{_LABEL[source]}: {PROVIDER_AMOUNT_INVALID}",
            fields={
                "last_error": _error(
                    PROVIDER_AMOUNT_INVALID,
                    f"provider amount is not a finite, non-negative decimal: {shown}",
                    source,
                    values=bad,
                ),
                "attempts": 0,
            },
            timer="clear",
            code=PROVIDER_AMOUNT_INVALID,
            level=logging.ERROR,
        )
    if record.is_final:
        return _on_final(record, news, source, now)
    return _follow(record, news, policy, source=source, now=now)


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
    said = _STATE_FOR_STATUS.get(status) if status is not None else None
    if record.state == State.NEEDS_ATTENTION and _stopped_for_human(record):
        return _record_only(record, fields, status)
    if said in FINAL_STATES:
        assert said is not None  # noqa: S101 - narrowed for mypy
        return Decision(
            "applied",
            said,
            f"final: {said}",
            reason=f"{_LABEL[source]}: status {status}",
            fields=fields,
            timer="clear",
            notify=True,
        )
    target = _target(record.state, status, source)
    if target in (State.CREATED, State.AWAITING_APPROVAL):  # on the way to Confirm
        chain = news.blockchain or record.blockchain
        stop = address_stop(record, chain, fields, when=_LABEL[source])
        if stop is not None:
            return stop
    held = _held_for_approval(record, news, policy, target, source=source, fields=fields)
    if held is not None:
        return held
    return _moved(record, target, status, policy, source=source, fields=fields, polls=polls)


def _stale(
    record: RefundRecord, status: int | None, policy: Policy, *, source: Source, polls: int
) -> Decision | None:
    """Older than what we know (a reordered webhook, a lagging replica): change nothing, but a
    poll still books the next one. None: not stale. A Confirm answer is never stale (it says the
    refund is confirmed, whatever status it carries)."""
    ours, theirs = _status_rank(record.provider_status), _status_rank(status)
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
        target = current if current != State.NEEDS_ATTENTION else State.CREATED
        if current in _RANK and _RANK[current] < _RANK[State.CREATED]:
            target = State.CREATED
        return target
    return state_for_status(current, status)


def address_stop(
    record: RefundRecord, blockchain: str | None, fields: Mapping[str, Any], *, when: str
) -> Decision | None:
    """Stop a refund whose address is not one of ``blockchain``'s before Confirm sends money to
    it (``ADDRESS_INVALID``, kept for a human: cancel it, and submit the payment again under a
    new reference with the right address). None: no address, no known chain, or a valid one."""
    address = record.refund_address
    problem = problem_for_chain(address, blockchain) if address else None
    if problem is None:
        return None
    return Decision(
        "anomaly",
        State.NEEDS_ATTENTION,
        "refund address invalid for its chain",
        reason=f"{when}: {ADDRESS_INVALID}",
        fields={
            **fields,
            "last_error": _error(
                ADDRESS_INVALID,
                f"refundAddress: {problem}",
                "confirm",
                field="refundAddress",
                blockchain=blockchain,
            ),
            "attempts": 0,
        },
        timer="clear",
        code=ADDRESS_INVALID,
        level=logging.ERROR,
    )


def _held_for_approval(
    record: RefundRecord,
    news: RefundData,
    policy: Policy,
    target: State,
    *,
    source: Source,
    fields: dict[str, Any],
) -> Decision | None:
    """Hold a newly created refund before Confirm when the policy asks (fails closed)."""
    if target != State.CREATED or record.state == State.CREATED or record.approved_by:
        return None
    amount = news.amount if news.amount is not None else record.amount
    if not policy.needs_approval(amount, news.currency or record.currency):
        return None
    return Decision(
        "applied",
        State.AWAITING_APPROVAL,
        "awaiting approval",
        reason=f"{_LABEL[source]}: amount above the approval threshold (or not known)",
        fields=fields,
        timer="set",
        due_in=policy.held_poll_seconds,
    )


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
    reason = f"{_LABEL[source]}: status {status}" if target != current else ""
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


def _stopped_for_human(record: RefundRecord) -> bool:
    return bool(record.last_error) and (record.last_error or {}).get("code") in _HUMAN_STOPS


def _record_only(record: RefundRecord, fields: dict[str, Any], status: int | None) -> Decision:
    """A refund stopped for a human keeps its stop (and its error) while its view is updated."""
    kept = {k: v for k, v in fields.items() if k not in ("attempts", "last_error")}
    return Decision("applied", record.state, f"kept for a human: status {status}", fields=kept)


# --- failed provider calls -----------------------------------------------------------------------

#: The key in ``last_error`` carrying when the current streak of transient failures began (epoch
#: seconds). Kept across the streak's failures; a success clears ``last_error`` and so the streak.
FAILING_SINCE = "failingSince"


@dataclass(frozen=True)
class FailureDecision:
    """What one failed provider call does to a refund (``steps._failed_attempt`` writes it).

    ``retry``: back on the timer in ``delay`` seconds, in the same state; otherwise the refund
    stops in ``needs_attention`` with ``reason``. ``failing_since``: the streak's start, to store
    in ``last_error[FAILING_SINCE]``.
    """

    retry: bool
    delay: float
    failing_since: float
    reason: str


def decide_failure(
    policy: Policy,
    *,
    last_error: Mapping[str, Any] | None,
    retryable: bool,
    code: str,
    backoff: float,
    retry_after: float | None,
    now: float,
) -> FailureDecision:
    """Retry a failed call with backoff, or stop for a human.

    The give-up clock is time since the first failure of the current streak (``last_error``'s
    ``failingSince``; this failure starts a streak when there is none). Why not time in the
    working state: a refund the provider keeps in ``processing`` for a day, read successfully all
    along, must not be given up on at its first failed Get. Why not a count: polls, throttles and
    a fleet's retries during a 15-minute outage used up 25 attempts in minutes.

    ``backoff`` is the jittered delay for this attempt (the caller owns the random source);
    ``retry_after`` (the provider's ``Retry-After``) is honoured when longer. A non-retryable
    (permanent) error stops at once whatever the clock says.
    """
    previous = (last_error or {}).get(FAILING_SINCE)
    since = min(float(previous), now) if isinstance(previous, int | float) else now
    if not retryable:
        return FailureDecision(False, 0.0, since, f"provider refused: {code}")
    if policy.gives_up(since, now):
        return FailureDecision(
            False, 0.0, since, f"gave up after {now - since:.0f}s of failures: {code}"
        )
    return FailureDecision(True, max(backoff, retry_after or 0.0), since, "")
