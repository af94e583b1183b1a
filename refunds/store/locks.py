"""The per-refund step lease: one worker at a time runs a step of a refund, and keeps it alive.

A step holds its refund's lease while it runs, so a redelivered message, a webhook's nudge and a
poll never run a step of the same refund at once. The lease lives in the record's own hash
(fields ``lk``, the holder's random token, and ``lku``, until when, Redis TIME): taking it is
part of the script that reads the record and begins the step, and the step's last write
releases it in its own script, so a step costs no lock commands of its own (a separate lock key
cost a SET, a GET and a DEL per step, and the tick a PTTL per claim). The lease is short; the
step's heartbeat (:meth:`StepLocks.beat`) renews it and keeps the refund's timer at its expiry,
so a worker that dies mid-step leaves the refund due again within one lease.

Apart from the ledger's records and transitions because it is a protocol of its own (lease,
heartbeat, fence); ``Ledger`` holds a :class:`StepLocks` and offers its methods. A refund
that does not exist has no lease to take: "taking" it answers no record and holds nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis

from refunds.models import RefundRecord, State, now
from refunds.store.codec import FIELDS, decode, encode, history_line
from refunds.store.keys import ARCHIVE_QUEUE, STATE_PREFIX, TIMERS, history_key, record_key
from refunds.store.scripts import Script

__all__ = ["LEASE_FIELDS", "Begin", "StepLock", "StepLocks"]

#: The record hash's lease fields: the holder's token, and until when (epoch seconds, Redis TIME).
LEASE_FIELDS = ("lk", "lku")


@dataclass(frozen=True)
class Begin:
    """The attempt a step begins in the script that takes its lock (see ``lua/lease_acquire.lua``).

    A record in one of ``from_states`` moves to ``working`` (a history line ``reason`` when it
    enters it from another state) with ``attempts`` counted (1 on entering, else one more);
    ``requires``: a record field (``codec.FIELDS`` name) that must be set; ``known_statuses``: a
    record outside ``working`` with a provider status must have one of these (else the step
    reads instead of acting, and nothing begins).
    """

    working: State
    from_states: tuple[State, ...]
    reason: str
    requires: str = ""
    known_statuses: tuple[int, ...] = ()

    def args(self, ref: str) -> list[str]:
        at = now()
        entered_from = next((s for s in self.from_states if s != self.working), None)
        line = history_line(at, entered_from, self.working, self.reason, "pipeline")
        return [
            self.working,
            "," + ",".join(self.from_states) + ",",
            line,
            encode(at),
            FIELDS[self.requires] if self.requires else "",
            ("," + ",".join(str(s) for s in self.known_statuses) + ",")
            if self.known_statuses
            else "",
            STATE_PREFIX,
        ]


class StepLock:
    """A step's lease on one refund, taken with the read of its record (one script).

    Also read in that script: ``record`` (None: no such refund, and nothing is held), ``fence``
    (the record's latest dispatch id, ``disp``), ``started`` (the dispatch id a step last started
    for, ``start``, before this take), ``began``/``begun`` (the step's start, and ``begin``'s
    attempt, were written there) and, when another step holds the lease, ``pttl`` (ms until it
    expires, so the caller can come back then). ``held``: whether this object holds the lease
    (a stale or duplicate message takes nothing).
    """

    def __init__(
        self,
        ref: str,
        seconds: float,
        *,
        start: bool = False,
        fence: int | None = None,
        begin: Begin | None = None,
    ) -> None:
        self.ref = ref
        self.seconds = seconds
        self.token = secrets.token_hex(16)
        self.record: RefundRecord | None = None
        self.fence = 0
        self.started = 0
        self.pttl = 0
        self.start = start
        self.start_fence = fence
        self.began = False
        self.begin = begin
        self.begun = False
        self.held = False

    def args(self) -> list[str]:
        return [
            self.token,
            str(int(self.seconds * 1000)),
            self.ref,
            "1" if self.start else "",
            "" if self.start_fence is None else str(self.start_fence),
            *(self.begin.args(self.ref) if self.begin else [""] * 7),
        ]

    def take(self, answer: list[object]) -> bool:
        """Read the acquire script's answer; False when another step holds the lease."""
        if not int(str(answer[0])):
            self.pttl = max(0, int(str(answer[1])))
            return False
        flat = list(answer[1])  # type: ignore[call-overload]
        raw = {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        # A step's record carries no history (steps never read it): one read less per step.
        self.record = decode(self.ref, raw, None) if raw else None
        self.fence = int(raw.get("disp") or 0) if raw else 0
        self.began = bool(int(str(answer[2])))
        self.begun = bool(int(str(answer[3])))
        self.started = int(str(answer[4]))
        self.held = bool(int(str(answer[5])))
        return True


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StepLocks:
    """Taking, renewing and releasing the step leases (``Ledger.locks``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._beat = Script(client, "lease_beat")
        self._acquire = Script(client, "lease_acquire")
        self._release = Script(client, "lease_release")

    def lock(self, ref: str, seconds: float) -> StepLock | None:
        """Take the refund's step lease (non-blocking, expiring after ``seconds``); the answer's
        ``record`` is the record read in the same round trip (None: no such refund, nothing
        held). None when another step holds the lease."""
        lock, _ = self.try_lock(ref, seconds)
        return lock

    def try_lock(
        self,
        ref: str,
        seconds: float,
        *,
        start: bool = False,
        fence: int | None = None,
        begin: Begin | None = None,
    ) -> tuple[StepLock | None, float]:
        """Like :meth:`lock`, also answering, when the lease is held, the seconds until it
        expires (0.0 when ours).

        ``start``: also write the step's start in the same script, as :meth:`beat` with the
        version just read and ``fence`` would (the lock's ``began`` says whether it did: not for
        a missing record, nor for a stale or duplicate ``fence``, which takes nothing).
        ``begin``: with ``start``, also begin the step's attempt there (``begun``)."""
        lock = StepLock(ref, seconds, start=start, fence=fence, begin=begin)
        keys = [record_key(ref), TIMERS, history_key(ref), ARCHIVE_QUEUE]
        answer = self._acquire(keys=keys, args=lock.args())
        if lock.take(list(answer)):
            return lock, 0.0
        return None, lock.pttl / 1000

    def beat(
        self,
        lock: StepLock,
        seconds: float,
        *,
        version: int | None,
        fence: int | None = None,
    ) -> bool:
        """Renew ``lock`` for ``seconds`` and, while the record is at ``version``, move the
        refund's timer to the lease's new expiry (Redis TIME); ``fence`` also records the
        dispatch id as started. False when the lease is no longer ours (stop renewing)."""
        if not lock.held:
            return False
        answer = self._beat(
            keys=[record_key(lock.ref), TIMERS],
            args=[
                lock.token,
                int(seconds * 1000),
                lock.ref,
                "" if version is None else str(version),
                "" if fence is None else str(fence),
            ],
        )
        return bool(answer)

    def unlock(self, ref: str, lock: StepLock) -> None:
        """Release a lease from :meth:`lock` if still ours (one that expired and another step
        took is left alone)."""
        if lock.held:
            self._release(keys=[record_key(ref)], args=[lock.token])
            lock.held = False
