"""Plain functions the Celery tasks call: one step of one refund, at most one provider call.

Each step takes the refund's step lease in the script that reads the record and begins its
attempt, does its one operation and records the outcome with a compare-and-set write that also
sets the refund's next due time and releases the lease: two Redis round trips per step. The
result says which task (if any) to nudge next; the durable timer is the safety net for every
nudge, so a lost message or a crashed worker delays a refund but never loses it. A Create whose
outcome leads to Confirm goes on with Confirm in the same task, under the same lease (its
outcome's write begins the Confirm attempt), while the task's soft time limit leaves room for it
(``REFUNDS_CONFIRM_INLINE``): one message, one lease and two writes fewer per refund.

Errors: transient ones (network, timeouts, 429, 5xx, gateway pages) and authentication errors
(after the client's one replay) are recorded and retried on the timer with capped exponential
backoff and full jitter, honouring ``Retry-After``, until a streak of failures has lasted
``REFUNDS_GIVE_UP_AFTER`` (``decisions.decide_failure``); then the refund goes to
``needs_attention``. Throttles (our own pacing, a 429's push-back, the credentials pause) are not
attempts and never start a streak. Permanent ones (400/403/404/422 business codes) go to
``needs_attention`` at once, with the provider's ``code`` and ``logId`` in ``last_error``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from refunds.context import Context
from refunds.decisions import (
    FAILING_SINCE,
    STEP_FOR_STATE,
    Decision,
    NextTask,
    Source,
    address_stop,
    continue_inline,
    decide,
    decide_failure,
    known_status,
    state_for_status,
)
from refunds.errors import (
    MceError,
    McePermanentError,
    MceThrottledError,
    MceTransientError,
    TransitionError,
)
from refunds.mce.client import idempotency_key
from refunds.mce.contract import Code
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State, now
from refunds.notify import outbox_members
from refunds.policy import Policy
from refunds.store.ledger import Edge, StepLock, Written
from refunds.store.locks import Begin

log = logging.getLogger("refunds.steps")

__all__ = ["STEPS", "STEP_FOR_STATE", "NextTask", "StepResult", "state_for_status"]


@dataclass(frozen=True)
class StepResult:
    note: str
    record: RefundRecord | None = None
    next_task: NextTask | None = None
    outcome: str = "applied"  # of provider news: applied | stale | mismatch | anomaly | conflict
    fence: int | None = None  # the dispatch id ``next_task``'s message must carry (None: unfenced)
    inline: bool = False  # ``next_task`` was begun in the same write and runs in this task
    parked: bool | None = None  # webhooks wait for the refund (None: not known, look)


def _extra(record: RefundRecord, **more: Any) -> dict[str, Any]:
    return {
        "client_reference": record.client_reference,
        "refund_id": record.crypto_refund_id,
        **more,
    }


class _Heartbeat:
    """Keeps a running step's lock (and the refund's timer) a short lease ahead.

    The step lock lives ``REFUNDS_STEP_LEASE_SECONDS`` (a few seconds) and is renewed every third
    of that while the step runs (by the process's one ``_Heartbeats`` thread), so a worker that
    dies (SIGKILL, hard time limit, a lost machine) stops renewing and its refund comes due again
    within one short lease, instead of after the hard time limit or a whole dispatch lease.
    ``version``: the record version the timer belongs to; the step's own writes move it on
    (``_write`` follows it), its outcome's timer is left alone.
    """

    def __init__(self, p: Context, lock: StepLock, version: int | None) -> None:
        self.p = p
        self.lock = lock
        self.version = version
        self.seconds = p.settings.step_lease_seconds
        self.last = time.monotonic()  # the lock was taken (or last renewed) then
        self.stopped = False

    def start(self) -> None:
        _HEARTBEATS.add(self)

    def beat(self) -> None:
        """Renew the lock once (called from the heartbeat thread)."""
        self.last = time.monotonic()
        try:
            if self.p.ledger.beat(self.lock, self.seconds, version=self.version):
                return
        except Exception:  # noqa: BLE001 - a Redis blip: try again at the next beat
            log.warning("step heartbeat failed", extra={"client_reference": self.lock.ref})
            return
        if not self.stopped:  # not the step's own last write releasing it
            log.warning(
                "step lock lost while the step runs", extra={"client_reference": self.lock.ref}
            )
        _HEARTBEATS.remove(self)

    def stop_soon(self) -> None:
        """No more beats (the step's last write is about to release the lock)."""
        self.stopped = True
        _HEARTBEATS.remove(self)


class _Heartbeats:
    """The process's running steps and the one thread that renews their locks.

    One daemon thread per process (started on first use, and again in a forked child, which
    inherits no threads), waking a few times per renewal interval: a step costs a dict entry,
    not a thread of its own (starting, signalling and joining one per step was about 7% of a
    worker's CPU in the throughput benchmark).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._beats: dict[int, _Heartbeat] = {}
        self._pid = 0

    def add(self, heartbeat: _Heartbeat) -> None:
        with self._guard:
            self._beats[id(heartbeat)] = heartbeat
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="step-heartbeats", daemon=True).start()

    def remove(self, heartbeat: _Heartbeat) -> None:
        with self._guard:
            self._beats.pop(id(heartbeat), None)

    def _run(self) -> None:
        while True:
            with self._guard:
                running = list(self._beats.values())
            wait = 0.5
            for heartbeat in running:
                every = heartbeat.seconds / 3
                due = heartbeat.last + every - time.monotonic()
                if due <= 0 and not heartbeat.stopped:
                    heartbeat.beat()
                    due = every
                wait = min(wait, max(due, 0.05))
            time.sleep(wait)


_HEARTBEATS = _Heartbeats()


@dataclass
class _Run:
    """The step this thread runs: its lock and heartbeat, for the writes that follow and end it."""

    lock: StepLock
    heartbeat: _Heartbeat
    started: float  # time.monotonic() when the lock was taken
    released: bool = False  # the step's last write released the lock
    parked: bool | None = None  # what that write saw of parked webhooks


_running = threading.local()  # the _Run of the step this thread runs (None between steps)


def _current() -> _Run | None:
    return getattr(_running, "run", None)


def _write(
    p: Context, record: RefundRecord, target: State, reason: str, *, last: bool = True, **kw: Any
) -> Written:
    """One ledger write; inside a step, the ``last`` one also releases the step's lock in the
    same script (and reads whether webhooks are parked), and records carry no history."""
    run = _current()
    if run is None:
        return p.ledger.write(record, target, reason, history=True, **kw)
    if not last:
        written = p.ledger.write(record, target, reason, **kw)
        run.heartbeat.version = written.record.version  # the timer the heartbeat keeps
        return written
    run.heartbeat.stop_soon()
    written = p.ledger.write(record, target, reason, release=run.lock, **kw)
    run.released, run.parked = True, written.parked
    return written


Body = Callable[[RefundRecord, bool], "StepResult"]


def _locked(
    p: Context,
    ref: str,
    body: Body,
    fence: int | None = None,
    begin: Begin | None = None,
) -> StepResult:
    """Run ``body(record, begun)`` under the refund's step lock, kept alive by a heartbeat.

    ``fence``: the dispatch id the message carries (None for a nudge sent after a write). A
    message of an older dispatch ("stale") or one whose dispatch already started ("duplicate")
    does nothing: the refund's current dispatch, or its timer, is responsible for it. ``begin``:
    the step's attempt, written in the script that takes the lock when the record allows it
    (``begun``). A result that continues ``inline`` runs the next step's body here, under the
    same lock.
    """
    seconds = p.settings.step_lease_seconds
    # The lock, the record, the step's start (the dispatch recorded as started, the timer one
    # short lease ahead) and its attempt in one script; a stale or duplicate message starts
    # nothing.
    token, busy_for = p.ledger.try_lock(ref, seconds, start=True, fence=fence, begin=begin)
    if token is None:
        # Another worker (or a webhook's nudge racing a step) holds it. Come back when its lock
        # would expire if it is not renewed (a dead holder's refund is then due at once; a live
        # holder's heartbeat keeps it later), never sooner, so a slow step is not re-dispatched.
        p.ledger.due_soon(ref, max(busy_for, 0.1))
        return StepResult("busy: another worker holds this refund")
    run: _Run | None = None
    try:
        record = token.record  # read in the same round trip that took the lock
        if record is None:
            p.ledger.clear_timer(ref)
            return StepResult("unknown reference")
        refused = _refused(token, record, fence)
        if refused is not None:
            return refused
        # The start was written with the lock: the dispatch recorded as started, the timer one
        # short lease ahead (a crash from here on costs one lease, not a dispatch lease).
        if not token.began:  # not expected (the script's checks are the ones above)
            p.ledger.beat(token, seconds, version=record.version, fence=fence)
        run = _Run(token, _Heartbeat(p, token, record.version), time.monotonic())
        run.heartbeat.start()
        _running.run = run
        result = body(record, token.begun)
        while result.inline and result.next_task is not None and result.record is not None:
            result = _CONTINUE[result.next_task](p, result.record)
        return StepResult(
            result.note,
            result.record,
            result.next_task,
            result.outcome,
            result.fence,
            parked=run.parked if run.released else None,
        )
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
        _running.run = None
        if run is not None:
            run.heartbeat.stop_soon()
        if run is None or not run.released:
            p.ledger.unlock(ref, token)


def _refused(token: StepLock, record: RefundRecord, fence: int | None) -> StepResult | None:
    """A fenced message that must do nothing: an older dispatch's, or one already started."""
    ref = record.client_reference
    if fence is None:
        return None
    if fence != token.fence:
        log.info(
            "stale message: dispatch %d, current %d",
            fence,
            token.fence,
            extra={"client_reference": ref},
        )
        return StepResult("stale message", record)
    if token.started >= fence:
        log.info("duplicate message: dispatch %d", fence, extra={"client_reference": ref})
        return StepResult("duplicate message", record)
    return None


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


_CREATE = Begin(State.CREATING, (State.RECEIVED, State.CREATING), "create attempt 1")
# Only an attempt already under way (``confirming``: past the approval rule, or approved) is
# resumed with the lease; a Confirm task for a refund in ``created`` (after an operator's retry,
# a slow Create, or REFUNDS_CONFIRM_INLINE=false) first applies this worker's approval rule.
_CONFIRM = Begin(
    State.CONFIRMING, (State.CONFIRMING,), "confirm attempt 1", requires="crypto_refund_id"
)


def _log_attempt(record: RefundRecord, operation: str) -> None:
    log.info(
        "%s attempt %d",
        operation,
        record.attempts,
        extra=_extra(record, operation=operation, attempt=record.attempts),
    )


def create(p: Context, ref: str, fence: int | None = None) -> StepResult:
    """Create the provider refund, idempotently keyed by the intent's ``clientReference``.

    The attempt (``creating``, counted) is written with the step's lock, before the call. After
    an operator's retry (a new key generation) the reference is first looked up at the provider:
    an earlier, ambiguous Create may have made a refund, and a provider that de-duplicates on the
    idempotency key only would make a second one for the new key. A refund created without a
    hold is confirmed in the same task (``_create_outcome``).
    """

    def body(record: RefundRecord, begun: bool) -> StepResult:
        if not begun:
            return StepResult(f"nothing to create in state {record.state}", record)
        _log_attempt(record, "create")
        if record.key_generation > 0 and not record.crypto_refund_id:
            try:
                found = p.client.get(client_reference=ref)
            except McePermanentError as exc:
                if exc.code != Code.NOT_FOUND:
                    return _failed_attempt(p, record, exc)
            except MceError as exc:
                return _failed_attempt(p, record, exc)
            else:
                log.info(
                    "retry: adopting the provider's refund for this reference", extra=_extra(record)
                )
                return apply_provider_update(p, record, found, source="lookup")
        return _post_then_apply(
            p,
            record,
            lambda: p.client.create(
                original_transaction_type=record.original_transaction_type,
                original_transaction_id=record.original_transaction_id,
                client_reference=ref,
                key=idempotency_key("create", ref, record.key_generation),
            ),
            source="create",
            # The provider already has a refund for this reference (from an attempt whose answer
            # we lost, after it forgot the key): find it instead of failing, and check it is ours.
            tolerated=Code.DUPLICATE_REFERENCE,
            look_up=lambda: p.client.get(client_reference=ref),
            look_up_source="lookup",
        )

    return _locked(p, ref, body, fence, _CREATE)


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

    return _locked(p, ref, body, fence, _CONFIRM)


def _confirm_created(p: Context, record: RefundRecord, refund_id: str) -> StepResult:
    """A Confirm task for a refund in ``created``: read it while its provider status is one we do
    not know; hold it when this worker's approval rule says so and nobody approved it (the
    process that sent the task, an operator's CLI say, may not carry the thresholds); else begin
    the attempt and call."""
    if record.provider_status is not None and not known_status(record.provider_status):
        return _read(p, record, refund_id)
    stop = address_stop(record, record.blockchain, {}, when="before Confirm")  # addresses.py
    if stop is not None:
        return perform(p, record, stop, actor="pipeline")
    policy = Policy.from_settings(p.settings)
    if not record.approved_by and policy.needs_approval(record.amount, record.currency):
        held = _write(
            p,
            record,
            State.AWAITING_APPROVAL,
            "confirm: amount above the approval threshold (or not known), not approved",
            timer="set",
            due_in=policy.held_poll_seconds,
        ).record
        log.warning(
            "confirm held for approval: %s %s above the threshold, not approved",
            held.amount,
            held.currency,
            extra=_extra(held, state=str(held.state)),
        )
        return StepResult("held for approval", held)
    begun = _write(
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
    stop = address_stop(record, record.blockchain, {}, when="before Confirm")  # never sent
    if stop is not None:
        return perform(p, record, stop, actor="pipeline")
    _log_attempt(record, "confirm")
    return _post_then_apply(
        p,
        record,
        lambda: p.client.confirm(
            crypto_refund_id=refund_id,
            refund_address=record.refund_address,
            key=idempotency_key("confirm", ref, record.key_generation),
        ),
        source="confirm",
        tolerated=Code.ALREADY_CONFIRMED,
        look_up=lambda: p.client.get(crypto_refund_id=refund_id),
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
    """One provider POST; the business error that means "already done" is answered with a Get."""
    try:
        try:
            data, said_by = post(), source
        except McePermanentError as exc:
            if exc.code != tolerated:
                raise
            log.info("%s: reading the refund instead", tolerated, extra=_extra(record))
            data, said_by = look_up(), look_up_source
    except MceError as exc:
        return _failed_attempt(p, record, exc)
    return apply_provider_update(p, record, data, source=said_by)


def poll(p: Context, ref: str, fence: int | None = None) -> StepResult:
    """Read the refund's provider status and follow it until it is final (held ones slowly)."""

    def body(record: RefundRecord, _begun: bool) -> StepResult:
        polled = (State.PROCESSING, State.AWAITING_APPROVAL)
        if record.state not in polled or not record.crypto_refund_id:
            return StepResult(f"nothing to poll in state {record.state}", record)
        return _read(p, record, record.crypto_refund_id)

    return _locked(p, ref, body, fence)


def _read(p: Context, record: RefundRecord, refund_id: str) -> StepResult:
    try:
        data = p.client.get(crypto_refund_id=refund_id)
    except MceError as exc:
        return _failed_attempt(p, record, exc, counted=False)
    return apply_provider_update(p, record, data, source="poll")


STEPS: dict[NextTask, Callable[[Context, str, int | None], StepResult]] = {
    "create": create,
    "confirm": confirm,
    "poll": poll,
}


# --- shared pieces -----------------------------------------------------------------------------


def apply_provider_update(
    p: Context,
    record: RefundRecord,
    data: RefundData,
    *,
    source: Source,
    actor: str = "pipeline",
) -> StepResult:
    """Decide what the provider's news does to ``record`` (``decisions.decide``), then write it.

    The one place where provider news moves a refund. Raises TransitionError when the record moved
    meanwhile (the caller's race handling applies) or the edge is not allowed yet.
    """
    decision = decide(record, data, Policy.from_settings(p.settings), source=source, now=now())
    return perform(p, record, decision, actor=actor)


def perform(p: Context, record: RefundRecord, decision: Decision, *, actor: str) -> StepResult:
    """Write one Decision: one compare-and-set transition, its timer and its notifications."""
    ref = record.client_reference
    if not decision.write:
        log.info(
            "provider news: %s",
            decision.note,
            extra=_extra(record, outcome=decision.outcome, state=str(record.state)),
        )
        return StepResult(decision.note, record, outcome=decision.outcome)
    if decision.conflict is not None:
        # Listed before it is marked: a crash in between lists a record, never hides a mark.
        p.ledger.flag_conflict(ref)
        p.stats.record_conflict(str(decision.conflict["kind"]))
    if decision.code is not None:
        p.stats.record_error(decision.code)
    new, fence, inline = _write_decision(p, record, decision, actor)
    _log_decision(new, decision)
    return StepResult(decision.note, new, decision.nudge, decision.outcome, fence, inline)


def _chain(p: Context, record: RefundRecord, decision: Decision) -> list[Edge]:
    """The next step's attempt to write with this decision, for a step that continues in the
    same task (none: the next step goes out as a message).

    Only a Create's outcome continues, into Confirm, and only inside a step, with the refund's
    id and a provider status we know, and while the task's soft time limit still leaves a whole
    step's call budget (``decisions.continue_inline``): Celery never interrupts a call that was
    allowed to wait. One message, one lock and two writes fewer per refund.
    """
    run = _current()
    if run is None or decision.nudge != "confirm" or decision.target != State.CREATED:
        return []
    if not p.settings.confirm_inline:
        return []
    fields: Mapping[str, Any] = decision.fields
    status = fields.get("provider_status", record.provider_status)
    if not (fields.get("crypto_refund_id") or record.crypto_refund_id) or not known_status(status):
        return []
    settings = p.settings
    if not continue_inline(
        time.monotonic() - run.started,
        settings.http_connect_timeout + settings.http_read_timeout,
        settings.task_soft_time_limit,
    ):
        return []
    return [(State.CONFIRMING, _CONFIRM.reason, {"attempts": 1})]


def _write_decision(
    p: Context, record: RefundRecord, decision: Decision, actor: str
) -> tuple[RefundRecord, int | None, bool]:
    """Write ``decision``: answers the record as written, the fence its nudge must carry (None:
    unfenced or no nudge) and whether the nudged step was begun to run in this task."""
    outbox = outbox_members(p.settings, record.client_reference) if decision.notify else ()
    then = _chain(p, record, decision)
    if then:
        # The Confirm attempt is begun in the same write, its timer one short lease ahead (kept
        # there by the heartbeat) and the lock kept: the task goes on with the call.
        written = _write(
            p,
            record,
            decision.target,
            decision.reason,
            last=False,
            fields=decision.fields,
            timer="set",
            due_in=p.settings.step_lease_seconds,
            actor=actor,
            outbox=outbox,
            then=then,
        )
        return written.record, None, True
    # A nudge is a dispatch: fenced like the tick's, with the short "dispatched, not started"
    # lease, so a nudge lost with a dying worker costs seconds, and a late one that the tick
    # already replaced does nothing.
    dispatch = decision.nudge is not None and decision.timer == "set"
    due_in = decision.due_in
    if dispatch and due_in is not None:
        due_in = min(due_in, p.settings.dispatch_lease)
    written = _write(
        p,
        record,
        decision.target,
        decision.reason,
        fields=decision.fields,
        timer=decision.timer,
        due_in=due_in,
        actor=actor,
        outbox=outbox,
        dispatch=dispatch,
    )
    return written.record, written.fence if dispatch else None, False


def _log_decision(new: RefundRecord, decision: Decision) -> None:
    extra = _extra(
        new, outcome=decision.outcome, state=str(new.state), provider_status=new.provider_status
    )
    if decision.code is not None:
        message = f"needs attention: {decision.code} ({decision.note})"
        extra["code"] = decision.code
    elif decision.notify:
        message = f"refund final: {new.state}"
    elif decision.conflict is not None:
        message = f"provider news contradicts {new.state}: {decision.conflict['kind']}"
        extra["conflict"] = dict(decision.conflict)
    else:
        message = f"provider news: {decision.note}"
    log.log(decision.level, "%s", message, extra=extra)


def _read_lag(p: Context, record: RefundRecord, exc: MceError) -> bool:
    """A Get's not-found shortly after Create: the provider's read lag, retried for a while.

    The window (``REFUNDS_NOT_FOUND_GRACE_SECONDS``) runs from when the provider's refund id was
    first recorded, or, before that (the duplicate-reference look-up), from the Create attempt.
    """
    if exc.code != Code.NOT_FOUND or exc.operation != "get":
        return False
    since = record.provider_seen_at or record.updated_at
    return now() - since < Policy.from_settings(p.settings).not_found_grace_seconds


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
        new = _write(
            p,
            record,
            record.state,
            "",
            fields={"attempts": max(0, attempts - 1)},
            timer="set",
            due_in=delay,
        ).record
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
    retryable = (
        isinstance(exc, MceTransientError)
        or not isinstance(exc, McePermanentError)
        or _read_lag(p, record, exc)
    )
    verdict = decide_failure(
        Policy.from_settings(p.settings),
        last_error=record.last_error,
        retryable=retryable,
        code=exc.code or type(exc).__name__,
        backoff=p.backoff(attempts),
        retry_after=exc.retry_after,
        now=now(),
    )
    error = {**error, FAILING_SINCE: verdict.failing_since}
    if verdict.retry:
        delay = verdict.delay
        log.warning("%s; retrying in %.2fs", exc, delay, extra={**extra, "delay": round(delay, 3)})
        new = _write(
            p,
            record,
            record.state,
            "",
            fields={"last_error": error, "attempts": attempts},
            timer="set",
            due_in=delay,
        ).record
        return StepResult(f"retry in {delay:.2f}s", new)
    why = verdict.reason
    log.error("needs attention: %s (%s)", why, exc, extra=extra)
    new = _write(
        p,
        record,
        State.NEEDS_ATTENTION,
        why,
        fields={"last_error": error, "attempts": attempts},
        timer="clear",
    ).record
    return StepResult("needs attention", new)
