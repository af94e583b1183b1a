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
from refunds.store.scripts import Script


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
        self._claim_script = Script(client, "timers_claim_due")
        self._due_soon = Script(client, "timers_due_soon")
        self._set_due_in = Script(client, "timers_set_due_in")

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
