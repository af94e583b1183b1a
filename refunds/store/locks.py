"""The per-refund step lock: one worker at a time runs a step of a refund, and keeps it alive.

A step holds ``rp:lock:{ref}`` (``refunds.store.keys``) while it runs, so a redelivered message,
a webhook and a poll never run a step of the same refund at once. The lock expires after a short
lease; the step's heartbeat (:meth:`StepLocks.beat`) renews it and keeps the refund's timer at
the lock's expiry, so a worker that dies mid-step leaves the refund due again within one lease.
Taking the lock reads the record in the same round trip (:class:`StepLock`): every step needs it
next.

Apart from the ledger's records and transitions because it is a protocol of its own (lease,
heartbeat, fence); ``Ledger`` inherits :class:`StepLocks` so callers keep one object.
"""

from __future__ import annotations

import contextlib

import redis
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


class StepLock(Lock):
    """redis-py's Lock (non-blocking, with a timeout) that reads the record in the same round
    trip as the ``SET NX PX`` that takes it: a step needs the record right after the lock.

    Also read in that round trip: ``fence`` (the record's latest dispatch id, ``disp``),
    ``started`` (the dispatch id a step last started for, ``start``) and, when the lock is taken
    by someone else, ``pttl`` (ms until it expires, so the caller can come back then; read in a
    second round trip, on that path only).
    """

    def __init__(self, client: redis.Redis, ref: str, seconds: float) -> None:
        super().__init__(client, lock_key(ref), timeout=seconds, blocking=False, thread_local=False)
        self.ref = ref
        self.record: RefundRecord | None = None
        self.fence = 0
        self.started = 0
        self.pttl = 0

    def do_acquire(self, token: str) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.name, token, nx=True, px=int(float(self.timeout or 0) * 1000))
        pipe.hgetall(record_key(self.ref))
        pipe.get(history_key(self.ref))
        ok, raw, hist = pipe.execute()
        if not ok:
            # Only a lock held by someone else needs its expiry: one more round trip on that
            # (rare) path instead of a PTTL on every step.
            self.pttl = max(0, int(self.redis.pttl(self.name)))
            return False
        self.record = decode(self.ref, raw, hist) if raw else None
        self.fence = int(raw.get("disp") or 0) if raw else 0
        self.started = int(raw.get("start") or 0) if raw else 0
        return True


class StepLocks:
    """Taking, renewing and releasing the step locks (mixed into ``Ledger``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._beat = client.register_script(_BEAT)

    def lock(self, ref: str, seconds: float) -> StepLock | None:
        """Take the refund's step lock (non-blocking, expiring after ``seconds``); the answer's
        ``record`` is the record read in the same round trip (None: no such refund). None when
        another worker holds the lock."""
        lock = StepLock(self.redis, ref, seconds)
        return lock if lock.acquire() else None

    def try_lock(self, ref: str, seconds: float) -> tuple[StepLock | None, float]:
        """Like :meth:`lock`, also answering, when the lock is taken, the seconds until it
        expires (0.0 when ours)."""
        lock = StepLock(self.redis, ref, seconds)
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
