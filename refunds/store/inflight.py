"""The in-flight index (``rp:inflight``): the refunds the pipeline is moving, by creation time.

Why: the age of the oldest refund in flight is what an alert thresholds ("a refund has been moving
for over an hour"), and ``/metrics`` serves it on every scrape. Finding it from the per-state sets
costs a pass over every refund in flight (SSCAN plus a ZSCORE each); the index answers it with one
``ZRANGE 0 0`` whatever their number. The scripts that change a state keep it: intake adds (a new
refund is ``received``), and a transition that leaves or enters the in-flight states removes or
adds in the same script (``Ledger.write``, from :func:`index_change`). A step's begun attempt
(``store.locks``) moves only between in-flight states, so it leaves the index alone.

Refunds written before the index existed are missing from it until :meth:`InFlight.rebuild`
(``refunds index-inflight``) adds them; :meth:`InFlight.unindexed` says how many are missing
(two O(1) counts), so the gap is never silent (``refunds_in_flight_unindexed`` in ``/metrics``).
"""

from __future__ import annotations

from typing import cast

import redis

from refunds.models import FINAL_STATES, State
from refunds.store.codec import encode
from refunds.store.keys import ALL, IN_FLIGHT, record_key, state_key
from refunds.store.scripts import Script, ScriptBatch

__all__ = ["IN_FLIGHT_STATES", "InFlight", "index_change"]

#: The states the pipeline moves on its own. Not the final ones, and not those waiting for a
#: human (``awaiting_approval``, ``needs_attention``): their count is the signal, not their age.
IN_FLIGHT_STATES: tuple[State, ...] = tuple(
    s
    for s in State
    if s not in FINAL_STATES and s not in (State.AWAITING_APPROVAL, State.NEEDS_ATTENTION)
)




def index_change(before: str, after: str, created_at: float) -> str:
    """What a transition from ``before`` to ``after`` does to the index, as the transition
    script's last argument: '' nothing, '-' remove, else the creation time to add with."""
    was, moving = State(before) in IN_FLIGHT_STATES, State(after) in IN_FLIGHT_STATES
    if was == moving:
        return ""
    return encode(float(created_at)) if moving else "-"


class InFlight:
    """Reads of the index, and its rebuild for refunds written before it existed."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._index_one = Script(client, "inflight_index_one")  # lua/inflight_index_one.lua

    def oldest(self) -> tuple[str, float] | None:
        """``(reference, created_at)`` of the oldest refund in flight, or None: one ZRANGE."""
        first = cast(list[tuple[str, float]], self.redis.zrange(IN_FLIGHT, 0, 0, withscores=True))
        return None if not first else (str(first[0][0]), float(first[0][1]))

    def count(self) -> int:
        return int(self.redis.zcard(IN_FLIGHT))

    def unindexed(self) -> int:
        """Refunds in an in-flight state that the index does not hold (written before it
        existed): the per-state counts minus the index's size, a handful of O(1) counts."""
        pipe = self.redis.pipeline(transaction=False)
        for state in IN_FLIGHT_STATES:
            pipe.scard(state_key(state))
        pipe.zcard(IN_FLIGHT)
        *counts, indexed = pipe.execute()
        return max(0, sum(int(n) for n in counts) - int(indexed))

    def rebuild(self, chunk: int = 1000) -> tuple[int, int]:
        """Index every refund in an in-flight state, drop entries no longer in one; answers
        ``(added, removed)``. Each refund is indexed by one script that reads its state, so a
        transition running meanwhile is never undone; safe to rerun."""
        states = "," + ",".join(IN_FLIGHT_STATES) + ","
        added = removed = 0
        seen: set[str] = set()
        for state in IN_FLIGHT_STATES:
            seen.update(str(r) for r in self.redis.sscan_iter(state_key(state), count=chunk))
        seen.update(str(r) for r, _ in self.redis.zscan_iter(IN_FLIGHT, count=chunk))
        refs = sorted(seen)
        for start in range(0, len(refs), chunk):
            batch = ScriptBatch(self.redis)
            for ref in refs[start : start + chunk]:
                batch.add(self._index_one, [record_key(ref), IN_FLIGHT, ALL], [ref, states])
            for answer in batch.execute():
                added += int(answer) > 0
                removed += int(answer) < 0
        return added, removed
