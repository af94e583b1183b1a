"""The step lease: one refund's step lock, kept alive while the step runs, released by its last
write.

Each step takes the refund's step lock in the script that reads the record and begins its
attempt, does its one operation and records the outcome with a compare-and-set write that also
sets the refund's next due time and releases the lock: two Redis round trips per step. A worker
that dies stops renewing its lock, so its refund comes due again within one short lease
(``REFUNDS_STEP_LEASE_SECONDS``). A fenced message of an older dispatch, or of one that already
started, does nothing: the refund's current dispatch, or its timer, is responsible for it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from config.settings import Settings
from refunds.context import Context
from refunds.decisions import INTERNAL_TRANSITION_REFUSED
from refunds.errors import TransitionError
from refunds.models import RefundRecord, State
from refunds.steps.result import StepResult
from refunds.store.ledger import StepLock, Written
from refunds.store.locks import Begin

log = logging.getLogger("refunds.steps")


class _Heartbeat:
    """Keeps a running step's lock (and the refund's timer) a short lease ahead.

    The step lock lives ``REFUNDS_STEP_LEASE_SECONDS`` (a few seconds) and is renewed every third
    of that while the step runs (by the process's one ``_Heartbeats`` thread), so a worker that
    dies (SIGKILL, hard time limit, a lost machine) stops renewing and its refund comes due again
    within one short lease, instead of after the hard time limit or a whole dispatch lease.
    ``version``: the record version the timer belongs to; the step's own writes move it on
    (``write`` follows it), its outcome's timer is left alone.
    """

    def __init__(self, p: Context, lock: StepLock, version: int | None) -> None:
        self.p = p
        self.lock = lock
        self.version = version
        self.seconds = p.settings.step_lease_seconds
        self.last = time.monotonic()  # the lock was taken (or last renewed) then
        self.succeeded = self.last  # the last renewal Redis confirmed
        self.stopped = False
        self.lost = False  # no renewal succeeded for a whole lease: the step must not call

    def too_old(self) -> bool:
        """Whether the lease may have lapsed: no renewal has succeeded for a whole lease (the
        heartbeat's maximum age), so another worker may hold the refund now."""
        return self.lost or time.monotonic() - self.succeeded > self.seconds

    def failed(self) -> None:
        """One renewal failed (a Redis blip). Past the maximum age the heartbeat gives up: the
        step stops before its next provider call (``fenced``), and its refund comes due again."""
        if not self.too_old():
            log.warning("step heartbeat failed", extra={"client_reference": self.lock.ref})
            return
        self.lost = True
        log.error(
            "step heartbeat has not succeeded for %.1fs (a lease): the step stops before its "
            "next provider call",
            time.monotonic() - self.succeeded,
            extra={"client_reference": self.lock.ref},
        )
        _HEARTBEATS.remove(self)

    def start(self) -> None:
        _HEARTBEATS.add(self)

    def beat(self) -> None:
        """Renew the lock once (called from the heartbeat thread)."""
        self.last = time.monotonic()
        try:
            if self.p.ledger.beat(self.lock, self.seconds, version=self.version):
                self.succeeded = self.last
                return
        except Exception:  # noqa: BLE001 - a Redis blip: try again at the next beat
            self.failed()
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


def fenced(p: Context) -> bool:
    """Whether the running step may send its provider POST now: the fence, checked right
    before every POST. The step's heartbeat must not have given up (no renewal succeeded for a
    whole lease, its maximum age), and its lease must still be its own, read (and renewed) in
    Redis in this call: a heartbeat merely late (a busy machine) is not a lost lease. False:
    abandon the call; the refund comes due again (its timer, or the worker that took it).
    Outside a step (no lease): True."""
    run = _current()
    if run is None:
        return True
    heartbeat = run.heartbeat
    ref = run.lock.ref
    if heartbeat.lost:  # the heartbeat gave up (no renewal for a whole lease): stop here
        log.error(
            "provider call abandoned: the step's heartbeat is too old",
            extra={"client_reference": ref},
        )
        return False
    try:
        ours = p.ledger.beat(run.lock, heartbeat.seconds, version=heartbeat.version)
    except Exception:  # cannot tell whether the lease is ours: do not call
        log.exception(
            "provider call abandoned: the lease could not be read", extra={"client_reference": ref}
        )
        return False
    if not ours:
        log.error(
            "provider call abandoned: another worker holds the refund's lease",
            extra={"client_reference": ref},
        )
        return False
    heartbeat.succeeded = time.monotonic()
    return True


def continue_inline(elapsed: float, call_budget: float, soft_limit: float) -> bool:
    """Whether a task that has run ``elapsed`` seconds may go on with one more step in itself.

    A step may need two calls (a token fetch, then its own), each allowed ``call_budget`` seconds
    (connect + read timeouts); Celery's soft time limit (``soft_limit`` seconds) must not cut one
    short (the provider may apply what we gave up on), so the next step runs here only while both
    still fit (the same budget ``config.settings`` checks for one step). All in seconds.
    """
    return elapsed + 2 * call_budget < soft_limit


def room_for_another_step(settings: Settings) -> bool:
    """Whether the step this thread runs may begin the next step in its own write and run it in
    the same task: only inside a step, with ``REFUNDS_CONFIRM_INLINE``, and while the task's soft
    time limit still leaves a whole step's call budget (Celery never interrupts a call that was
    allowed to wait). One message, one lock and two writes fewer per refund."""
    run = _current()
    if run is None or not settings.confirm_inline:
        return False
    return continue_inline(
        time.monotonic() - run.started,
        settings.http_connect_timeout + settings.http_read_timeout,
        settings.task_soft_time_limit,
    )


def write(
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


Body = Callable[[RefundRecord, bool], StepResult]


def locked(
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
    (``begun``).
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
        "code": INTERNAL_TRANSITION_REFUSED,
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
