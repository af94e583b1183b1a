"""The per-refund step lock: one worker at a time runs a step of a refund, and keeps it alive.

A step holds ``rp:lock:{ref}`` (``refunds.store.keys``) while it runs, so a redelivered message,
a webhook and a poll never run a step of the same refund at once. The lock expires after a short
lease; the step's heartbeat (:meth:`StepLocks.beat`) renews it and keeps the refund's timer at
the lock's expiry, so a worker that dies mid-step leaves the refund due again within one lease.
Taking the lock reads the record in the same script (:class:`StepLock`): every step needs it
next; a step's lock also records the step's start there (one script instead of two).

Apart from the ledger's records and transitions because it is a protocol of its own (lease,
heartbeat, fence); ``Ledger`` inherits :class:`StepLocks` so callers keep one object.
"""

from __future__ import annotations

import contextlib

import redis
from redis.commands.core import Script
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from refunds.models import RefundRecord
from refunds.store.codec import decode
from refunds.store.keys import TIMERS, history_key, lock_key, record_key

__all__ = ["StepLock", "StepLocks"]

# KEYS: step lock, timers, record. ARGV: lock token, lease ms, ref, version ('' = leave the timer),
#       fence ('' = none)
# The step's heartbeat (and its start): renew the lock if it is still ours and, while the record is
# still at the version the step last wrote or read, keep the refund's timer at the lock's expiry
# (Redis TIME), so a worker that dies mid-step leaves a refund due within one short lease. Once
# the step has written its outcome (a new version) the timer is the outcome's and is left alone.
# Answers 1, or 0 when the lock is no longer ours.
_BEAT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], 'start', ARGV[5]) end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[3], 'ver') == ARGV[4] then
  local t = redis.call('TIME')
  local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2]) / 1000
  redis.call('ZADD', KEYS[2], 'XX', string.format('%.6f', due), ARGV[3])
end
return 1
"""


# KEYS: step lock, record, history, timers. ARGV: lock token, lease ms, ref, start ('' = only
#       take the lock and read), fence ('' = none: a nudge)
# Takes the lock (SET NX PX) and reads the record and its history in one script; answers
# {0, pttl} when someone else holds the lock, else {1, record (HGETALL), history, started}.
# With ``start``, the step's start is written in the same script (what ``_BEAT`` with a fence and
# the version just read did in a round trip of its own): unless the fence is stale (not the
# record's ``disp``) or already started (``start`` >= fence), the dispatch is recorded as started
# and the refund's timer moves to the lock's expiry (Redis TIME). ``started`` is 1 when that was
# done, 0 when not (no record, or a stale or duplicate message).
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
local raw = redis.call('HGETALL', KEYS[2])
if #raw == 0 then return {1, raw, false, 0} end
local hist = redis.call('GET', KEYS[3])
if ARGV[4] == '' then return {1, raw, hist, 0} end
if ARGV[5] ~= '' then
  local disp, start = 0, 0
  for i = 1, #raw, 2 do
    if raw[i] == 'disp' then disp = tonumber(raw[i + 1]) or 0 end
    if raw[i] == 'start' then start = tonumber(raw[i + 1]) or 0 end
  end
  local fence = tonumber(ARGV[5])
  if fence ~= disp or start >= fence then return {1, raw, hist, 0} end
  redis.call('HSET', KEYS[2], 'start', ARGV[5])
end
local t = redis.call('TIME')
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2]) / 1000
redis.call('ZADD', KEYS[4], 'XX', string.format('%.6f', due), ARGV[3])
return {1, raw, hist, 1}
"""


class StepLock(Lock):
    """redis-py's Lock (non-blocking, with a timeout) that reads the record in the same round
    trip as the ``SET NX PX`` that takes it: a step needs the record right after the lock.

    Also read in that round trip: ``fence`` (the record's latest dispatch id, ``disp``),
    ``started`` (the dispatch id a step last started for, ``start``) and, when the lock is taken
    by someone else, ``pttl`` (ms until it expires, so the caller can come back then; read in a
    second round trip, on that path only).
    """

    def __init__(
        self,
        client: redis.Redis,
        ref: str,
        seconds: float,
        *,
        start: bool = False,
        fence: int | None = None,
        script: Script | None = None,
    ) -> None:
        super().__init__(client, lock_key(ref), timeout=seconds, blocking=False, thread_local=False)
        self.ref = ref
        self.record: RefundRecord | None = None
        self.fence = 0
        self.started = 0
        self.pttl = 0
        self.start = start
        self.start_fence = fence
        self.began = False  # the step's start was written with the lock (``start``)
        self._acquire_script = script or client.register_script(_ACQUIRE)

    def do_acquire(self, token: str | bytes) -> bool:
        answer = self._acquire_script(
            keys=[self.name, record_key(self.ref), history_key(self.ref), TIMERS],
            args=[
                token.decode() if isinstance(token, bytes) else token,
                int(float(self.timeout or 0) * 1000),
                self.ref,
                "1" if self.start else "",
                "" if self.start_fence is None else str(self.start_fence),
            ],
        )
        if not int(answer[0]):
            self.pttl = max(0, int(answer[1]))
            return False
        flat, hist, began = list(answer[1]), answer[2], answer[3]
        raw = {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        self.record = decode(self.ref, raw, _text(hist) if hist else None) if raw else None
        self.fence = int(raw.get("disp") or 0) if raw else 0
        self.started = int(raw.get("start") or 0) if raw else 0
        self.began = bool(int(began or 0))
        return True


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StepLocks:
    """Taking, renewing and releasing the step locks (mixed into ``Ledger``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._beat = client.register_script(_BEAT)
        self._acquire = client.register_script(_ACQUIRE)

    def lock(self, ref: str, seconds: float) -> StepLock | None:
        """Take the refund's step lock (non-blocking, expiring after ``seconds``); the answer's
        ``record`` is the record read in the same round trip (None: no such refund). None when
        another worker holds the lock."""
        lock = StepLock(self.redis, ref, seconds, script=self._acquire)
        return lock if lock.acquire() else None

    def try_lock(
        self, ref: str, seconds: float, *, start: bool = False, fence: int | None = None
    ) -> tuple[StepLock | None, float]:
        """Like :meth:`lock`, also answering, when the lock is taken, the seconds until it
        expires (0.0 when ours).

        ``start``: also write the step's start in the same script, as :meth:`beat` with the
        version just read and ``fence`` would (the lock's ``began`` says whether it did: not for
        a missing record, nor for a stale or duplicate ``fence``)."""
        lock = StepLock(self.redis, ref, seconds, start=start, fence=fence, script=self._acquire)
        if lock.acquire():
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
        refund's timer to the lock's new expiry (Redis TIME); ``fence`` also records the dispatch
        id as started. False when the lock is no longer ours (it expired: stop renewing)."""
        token = lock.local.token
        if token is None:
            return False
        answer = self._beat(
            keys=[lock.name, TIMERS, record_key(lock.ref)],
            args=[
                token.decode() if isinstance(token, bytes) else str(token),
                int(seconds * 1000),
                lock.ref,
                "" if version is None else str(version),
                "" if fence is None else str(fence),
            ],
        )
        return bool(answer)

    def unlock(self, ref: str, lock: StepLock) -> None:
        """Release a lock from :meth:`lock` if still ours (an expired one is left alone)."""
        with contextlib.suppress(LockNotOwnedError):
            lock.release()
