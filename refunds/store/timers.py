"""Durable timers with leases: when each refund (or outbox entry) next needs a worker.

Every non-final, non-held refund has a due time in ``rp:timers`` (see ``store.keys``). The
scheduler tick claims due references by moving their due time to ``now + lease`` in the same
script that reads them, so two ticks never hand out the same refund; the claim also writes the
dispatch id (fence) the step's message carries. A running step keeps the timer one short step
lease ahead (``Ledger.beat``) and, once done, sets the next due time (or removes the timer once
the refund is final or held). A worker that dies mid-step does neither, so the refund comes due
again within one step lease: nothing is lost to a crash. Every due time is computed from Redis
``TIME`` inside the script that writes it (callers pass relative delays): one clock for all hosts.
"""

from __future__ import annotations

from typing import cast

import redis

from refunds.store.keys import LAST_TICK, OUTBOX, TIMERS, record_key

# KEYS: timer set, tick heartbeat key ('' = none).
# ARGV: lease seconds, limit, record key prefix ('' = do not read states), '1' = check the step
#       leases and write fences ('' = neither)
# Answers a flat list: ref, state ('' when the record is gone or states were not asked), fence
# (the dispatch id written for this claim, 0 when none), ...
# The clock is Redis TIME (one clock for every host). With the lease check, a due refund whose
# step lease is still held (a step is running and its heartbeat renews it: fields ``lk``/``lku``
# of the record, see ``store.locks``) is not handed out: its timer moves to when that lease would
# expire. Every other claimed refund gets a new dispatch id
# (HINCRBY 'disp'), so a message of an older dispatch is recognised as stale by the step.
# One ZADD for the whole batch (not one per member): the claim is one script, one write. The
# record keys are built from the prefix inside the script, since the claimed references are not
# known before it runs (fine on one Redis or Sentinel; Redis Cluster is not used).
_CLAIM_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now),
  'LIMIT', 0, tonumber(ARGV[2]))
local leased = string.format('%.6f', now + tonumber(ARGV[1]))
local args = {}
local out = {}
for _, ref in ipairs(due) do
  local rec = {}
  local held = 0
  if ARGV[3] ~= '' then
    -- One read of the state and, for a fenced claim, the dispatch counters and the step lease.
    if ARGV[4] ~= '' then
      rec = redis.call('HMGET', ARGV[3] .. ref, 'state', 'disp', 'start', 'lk', 'lku')
      if (rec[4] or '') ~= '' and (tonumber(rec[5]) or 0) > now then held = tonumber(rec[5]) end
    else
      rec = {redis.call('HGET', ARGV[3] .. ref, 'state')}
    end
  end
  if held > 0 then
    redis.call('ZADD', KEYS[1], 'XX', string.format('%.6f', held), ref)
  else
    out[#out + 1] = ref
    local state = rec[1] or ''
    out[#out + 1] = state
    local lease = leased
    if ARGV[4] ~= '' and state ~= '' then
      -- Dispatches that never started (a backlog, or lost messages) double the next lease, so
      -- a queue that is slower than the lease gets one more message per doubling, not per tick.
      local waiting = (tonumber(rec[2]) or 0) - (tonumber(rec[3]) or 0)
      if waiting > 0 then
        lease = string.format('%.6f', now + tonumber(ARGV[1]) * math.min(2 ^ waiting, 16))
      end
      out[#out + 1] = redis.call('HINCRBY', ARGV[3] .. ref, 'disp', 1)
    else
      out[#out + 1] = 0
    end
    args[#args + 1] = lease; args[#args + 1] = ref
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(args)) end
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], string.format('%.6f', now)) end
return out
"""

# KEYS: timer set. ARGV: seconds from Redis TIME, member. Bring an existing timer forward.
_DUE_SOON = """
local t = redis.call('TIME')
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
return redis.call('ZADD', KEYS[1], 'XX', 'LT', string.format('%.6f', due), ARGV[2])
"""


# KEYS: timer set. ARGV: seconds from Redis TIME, member.
_SET_DUE_IN = """
local t = redis.call('TIME')
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
return redis.call('ZADD', KEYS[1], string.format('%.6f', due), ARGV[2])
"""


def redis_now(client: redis.Redis) -> float:
    """Redis TIME as epoch seconds: the one clock of due times, leases and ages."""
    sec, usec = client.time()
    return sec + usec / 1_000_000


def _encode(value: float) -> str:
    return repr(value)


class Timers:
    """The timer sets (``rp:timers`` for refunds, ``rp:outbox`` for notifications)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._claim_script = client.register_script(_CLAIM_DUE)
        self._due_soon = client.register_script(_DUE_SOON)
        self._set_due_in = client.register_script(_SET_DUE_IN)

    def _claim(
        self,
        key: str,
        lease_seconds: float,
        limit: int,
        *,
        states: bool,
        heartbeat: bool,
        fence: bool,
    ) -> list[tuple[str, str | None, int]]:
        flat = self._claim_script(
            keys=[key, LAST_TICK if heartbeat else ""],
            args=[
                _encode(lease_seconds),
                limit,
                record_key("") if states else "",
                "1" if fence else "",
            ],
        )
        return [
            (str(r), str(s) or None, int(f))
            for r, s, f in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
        ]

    def claim_due(self, lease_seconds: float, limit: int, key: str = TIMERS) -> list[str]:
        """Members of a timer set (refunds, or outbox entries) whose due time has passed, leased
        for ``lease_seconds`` (from Redis TIME)."""
        return [
            r
            for r, _, _ in self._claim(
                key, lease_seconds, limit, states=False, heartbeat=False, fence=False
            )
        ]

    def claim_due_states(
        self, lease_seconds: float, limit: int, *, heartbeat: bool = False
    ) -> list[tuple[str, str | None]]:
        """Like :meth:`claim_due` on the refunds' timers, answering ``(ref, state or None)`` in
        the same round trip; ``heartbeat`` also records the tick (see :meth:`beat_heartbeat`)."""
        return [
            (r, s)
            for r, s, _ in self._claim(
                TIMERS, lease_seconds, limit, states=True, heartbeat=heartbeat, fence=False
            )
        ]

    def claim_dispatch(
        self, lease_seconds: float, limit: int, *, heartbeat: bool = False
    ) -> list[tuple[str, str | None, int]]:
        """The tick's claim: due refunds as ``(ref, state or None, fence)``.

        ``lease_seconds`` is the "dispatched, not started" lease: the refund comes due again only
        if no step started within it (a lost message); each further dispatch that did not start
        doubles it (up to 16 times), so a long backlog adds a message per doubling, never per tick,
        and only the newest one runs. A refund whose step lock is held is not
        handed out (its timer moves to the lock's expiry). ``fence`` is the dispatch id the
        message must carry: a step run by an older one does nothing.
        """
        return self._claim(
            TIMERS, lease_seconds, limit, states=True, heartbeat=heartbeat, fence=True
        )

    def claim_outbox(
        self, lease_seconds: float, limit: int, *, heartbeat: bool = False
    ) -> list[str]:
        """Due outbox members (``task:{ref}``, ``http:{ref}``), leased for ``lease_seconds``."""
        return [
            r
            for r, _, _ in self._claim(
                OUTBOX, lease_seconds, limit, states=False, heartbeat=heartbeat, fence=False
            )
        ]

    def set_due(self, ref: str, due: float) -> None:
        self.redis.zadd(TIMERS, {ref: due})

    def set_due_in(self, ref: str, seconds: float) -> None:
        """Set the refund's timer to ``seconds`` from Redis TIME (creating it if missing)."""
        self._set_due_in(keys=[TIMERS], args=[_encode(float(seconds)), ref])

    def due_soon(self, ref: str, seconds: float) -> None:
        """Bring an existing timer forward to ``seconds`` from Redis TIME (never later, never
        new)."""
        self._due_soon(keys=[TIMERS], args=[_encode(float(seconds)), ref])

    def clear_timer(self, ref: str) -> None:
        self.redis.zrem(TIMERS, ref)

    def timed(self, ref_prefix: str) -> list[str]:
        """References starting with ``ref_prefix`` that have a timer (ZSCAN, in chunks)."""
        return [str(member) for member, _ in self.redis.zscan_iter(TIMERS, match=ref_prefix + "*")]

    def due_at(self, ref: str) -> float | None:
        score = self.redis.zscore(TIMERS, ref)
        return None if score is None else float(score)

    def due_count(self, until: float) -> int:
        """Timers due at or before ``until`` (epoch seconds)."""
        return int(self.redis.zcount(TIMERS, "-inf", until))

    def timer_lag(self) -> float:
        """Seconds the most overdue timer is past due (0 when nothing is overdue)."""
        first = cast(list[tuple[str, float]], self.redis.zrange(TIMERS, 0, 0, withscores=True))
        if not first:
            return 0.0
        return max(0.0, redis_now(self.redis) - float(first[0][1]))

    def beat_heartbeat(self) -> None:
        """Record that the scheduler ticked now (health checks read it)."""
        self.redis.set(LAST_TICK, repr(redis_now(self.redis)))

    def since_last_tick(self) -> float | None:
        """Seconds since a scheduler tick last ran (None: never)."""
        value = self.redis.get(LAST_TICK)
        return None if value is None else max(0.0, redis_now(self.redis) - float(cast(str, value)))

    def timer_count(self) -> int:
        return int(self.redis.zcard(TIMERS))

    def outbox_count(self) -> int:
        """Outcome notifications waiting for delivery."""
        return int(self.redis.zcard(OUTBOX))
