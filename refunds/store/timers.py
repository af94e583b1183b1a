"""Durable timers with leases: when each refund (or outbox entry) next needs a worker.

Every non-final, non-held refund has a due time in ``rp:timers`` (see ``store.keys``). The
scheduler tick claims due references by moving their due time to ``now + lease`` in the same
script that reads them, so two ticks never hand out the same refund. A worker that finishes a step
sets the next due time (or removes the timer once the refund is final or held). A worker that dies
mid-step does neither, so the lease runs out and the refund comes due again: nothing is lost to a
crash.
"""

from __future__ import annotations

from typing import cast

import redis

from refunds.models import now
from refunds.store.keys import LAST_TICK, OUTBOX, TIMERS, record_key

# KEYS: timer set, tick heartbeat key ('' = none).
# ARGV: now, lease until, limit, record key prefix ('' = do not read states)
# Answers a flat list: ref, state ('' when the record is gone or states were not asked), ...
# One ZADD for the whole batch (not one per member): the claim is one script, one write. The
# record keys are built from the prefix inside the script, since the claimed references are not
# known before it runs (fine on one Redis or Sentinel; Redis Cluster is not used).
_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #due > 0 then
  local args = {}
  for _, ref in ipairs(due) do args[#args + 1] = ARGV[2]; args[#args + 1] = ref end
  redis.call('ZADD', KEYS[1], 'XX', unpack(args))
end
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
local out = {}
for _, ref in ipairs(due) do
  out[#out + 1] = ref
  if ARGV[4] ~= '' then
    out[#out + 1] = redis.call('HGET', ARGV[4] .. ref, 'state') or ''
  else
    out[#out + 1] = ''
  end
end
return out
"""


def _encode(value: float) -> str:
    return repr(value)


class Timers:
    """The timer sets (``rp:timers`` for refunds, ``rp:outbox`` for notifications)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._claim = client.register_script(_CLAIM_DUE)

    def _claim_pairs(
        self, key: str, lease_seconds: float, limit: int, states: bool, heartbeat: bool
    ) -> list[tuple[str, str | None]]:
        at = now()
        flat = self._claim(
            keys=[key, LAST_TICK if heartbeat else ""],
            args=[
                _encode(at),
                _encode(at + lease_seconds),
                limit,
                record_key("") if states else "",
            ],
        )
        return [(str(r), str(s) or None) for r, s in zip(flat[::2], flat[1::2], strict=True)]

    def claim_due(self, lease_seconds: float, limit: int, key: str = TIMERS) -> list[str]:
        """Members of a timer set (refunds, or outbox entries) whose due time has passed, leased
        for ``lease_seconds``."""
        return [r for r, _ in self._claim_pairs(key, lease_seconds, limit, False, False)]

    def claim_due_states(
        self, lease_seconds: float, limit: int, *, heartbeat: bool = False
    ) -> list[tuple[str, str | None]]:
        """Like :meth:`claim_due` on the refunds' timers, answering ``(ref, state or None)`` in
        the same round trip; ``heartbeat`` also records the tick (see :meth:`beat_heartbeat`)."""
        return self._claim_pairs(TIMERS, lease_seconds, limit, True, heartbeat)

    def claim_outbox(
        self, lease_seconds: float, limit: int, *, heartbeat: bool = False
    ) -> list[str]:
        """Due outbox members (``task:{ref}``, ``http:{ref}``), leased for ``lease_seconds``."""
        return [r for r, _ in self._claim_pairs(OUTBOX, lease_seconds, limit, False, heartbeat)]

    def set_due(self, ref: str, due: float) -> None:
        self.redis.zadd(TIMERS, {ref: due})

    def due_soon(self, ref: str, seconds: float) -> None:
        """Bring an existing timer forward to ``seconds`` from now (never later, never new)."""
        self.redis.zadd(TIMERS, {ref: now() + seconds}, xx=True, lt=True)

    def clear_timer(self, ref: str) -> None:
        self.redis.zrem(TIMERS, ref)

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
        return max(0.0, now() - float(first[0][1]))

    def beat_heartbeat(self) -> None:
        """Record that the scheduler ticked now (health checks read it)."""
        self.redis.set(LAST_TICK, repr(now()))

    def since_last_tick(self) -> float | None:
        """Seconds since a scheduler tick last ran (None: never)."""
        value = self.redis.get(LAST_TICK)
        return None if value is None else max(0.0, now() - float(cast(str, value)))

    def timer_count(self) -> int:
        return int(self.redis.zcard(TIMERS))

    def outbox_count(self) -> int:
        """Outcome notifications waiting for delivery."""
        return int(self.redis.zcard(OUTBOX))
