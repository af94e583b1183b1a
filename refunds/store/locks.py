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
from dataclasses import dataclass

import redis
from redis.commands.core import Script
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from refunds.models import RefundRecord, State, now
from refunds.store.codec import FIELDS, decode, encode, history_line
from refunds.store.keys import STATE_PREFIX, TIMERS, history_key, lock_key, record_key
from refunds.store.lua import HISTORY, NOW

__all__ = ["Begin", "StepLock", "StepLocks"]

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


# KEYS: step lock, record, timers, history list.
# ARGV: lock token, lease ms, ref, start ('' = only take the lock and read), fence ('' = none: a
#       nudge), then the attempt to begin ('' = none): working state, the states it begins from
#       (',a,b,'), the history line for entering the working state, now, the field the record
#       must hold ('' = none), the provider statuses a record outside the working state must be
#       in when it has one (',0,1,', '' = any), the state sets' key prefix.
# Takes the lock (SET NX PX) and reads the record in one script; answers {0, pttl} when someone
# else holds the lock, else {1, record (as written), started, begun, the record's ``start`` before
# this script}.
# With ``start``, the step's start is written in the same script: unless the fence is stale (not
# the record's ``disp``) or already started (``start`` >= fence), the dispatch is recorded as
# started and the refund's timer moves to the lock's expiry (Redis TIME); ``started`` is 1 when
# that was done, 0 when not (no record, or a stale or duplicate message). With an attempt to
# begin, a record in one of its states (and meeting its conditions) is moved to the working state
# with the attempt counted, in the same HSET (``begun`` 1): the write a step made in a round trip
# of its own before its provider call.
_ACQUIRE = (
    NOW
    + HISTORY
    + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
local raw = redis.call('HGETALL', KEYS[2])
if #raw == 0 or ARGV[4] == '' then return {1, raw, 0, 0} end
local rec = {}
for i = 1, #raw, 2 do rec[raw[i]] = raw[i + 1] end
local before = rec['start'] or '0'
local sets = {}
if ARGV[5] ~= '' then
  local fence = tonumber(ARGV[5])
  if fence ~= (tonumber(rec['disp']) or 0) or (tonumber(rec['start']) or 0) >= fence then
    return {1, raw, 0, 0}
  end
  sets = {'start', ARGV[5]}
end
local begun = 0
local st, working = rec['state'], ARGV[6]
local function listed(list, value) return string.find(list, ',' .. value .. ',', 1, true) end
if working ~= '' and listed(ARGV[7], st)
    and (ARGV[10] == '' or (rec[ARGV[10]] or '') ~= '')
    and (ARGV[11] == '' or st == working or (rec['pstatus'] or '') == ''
         or listed(ARGV[11], rec['pstatus'])) then
  local attempts = 1
  if st == working then attempts = (tonumber(rec['attempts']) or 0) + 1 end
  local more = {'attempts', tostring(attempts), 'state', working, 'updated', ARGV[9],
    'ver', tostring((tonumber(rec['ver']) or 0) + 1)}
  for _, v in ipairs(more) do sets[#sets + 1] = v end
  if st ~= working then
    push_history(rec, KEYS[2], KEYS[4], {ARGV[8]})
    redis.call('SREM', ARGV[12] .. st, ARGV[3])
    redis.call('SADD', ARGV[12] .. working, ARGV[3])
  end
  begun = 1
end
if #sets > 0 then
  redis.call('HSET', KEYS[2], unpack(sets))
  for j = 1, #sets, 2 do rec[sets[j]] = sets[j + 1] end
end
local due = string.format('%.6f', now() + tonumber(ARGV[2]) / 1000)
if begun == 1 then
  redis.call('ZADD', KEYS[3], due, ARGV[3])  -- an attempt always has a timer
else
  redis.call('ZADD', KEYS[3], 'XX', due, ARGV[3])
end
local out = {}
for f, v in pairs(rec) do out[#out + 1] = f; out[#out + 1] = v end
return {1, out, 1, begun, before}
"""
)


@dataclass(frozen=True)
class Begin:
    """The attempt a step begins in the script that takes its lock (see ``_ACQUIRE``).

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
        begin: Begin | None = None,
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
        self.begin = begin
        self.begun = False  # ``begin``'s attempt was written with the lock (``record`` has it)
        self._acquire_script = script or client.register_script(_ACQUIRE)

    def do_acquire(self, token: str | bytes) -> bool:
        answer = self._acquire_script(
            keys=[self.name, record_key(self.ref), TIMERS, history_key(self.ref)],
            args=[
                token.decode() if isinstance(token, bytes) else token,
                int(float(self.timeout or 0) * 1000),
                self.ref,
                "1" if self.start else "",
                "" if self.start_fence is None else str(self.start_fence),
                *(self.begin.args(self.ref) if self.begin else [""] * 7),
            ],
        )
        if not int(answer[0]):
            self.pttl = max(0, int(answer[1]))
            return False
        flat = list(answer[1])
        raw = {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        # A step's record carries no history (steps never read it): one read less per step.
        self.record = decode(self.ref, raw, None) if raw else None
        self.fence = int(raw.get("disp") or 0) if raw else 0
        self.began = bool(int(answer[2] or 0))
        self.begun = len(answer) > 3 and bool(int(answer[3] or 0))
        self.started = int(answer[4]) if len(answer) > 4 else int(raw.get("start") or 0)
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
        self,
        ref: str,
        seconds: float,
        *,
        start: bool = False,
        fence: int | None = None,
        begin: Begin | None = None,
    ) -> tuple[StepLock | None, float]:
        """Like :meth:`lock`, also answering, when the lock is taken, the seconds until it
        expires (0.0 when ours).

        ``start``: also write the step's start in the same script, as :meth:`beat` with the
        version just read and ``fence`` would (the lock's ``began`` says whether it did: not for
        a missing record, nor for a stale or duplicate ``fence``). ``begin``: with ``start``, also
        begin the step's attempt there (the lock's ``begun`` says whether it did)."""
        lock = StepLock(
            self.redis, ref, seconds, start=start, fence=fence, begin=begin, script=self._acquire
        )
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
