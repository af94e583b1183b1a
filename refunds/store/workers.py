"""Worker liveness: which step messages each live worker holds, so a dead one's are seen in seconds.

Why: a step message a worker has reserved but not started is lost with the worker when it dies
(SIGKILL, a lost machine): with late acks it sits in the broker's unacked set until the visibility
timeout (an hour), and the refund's timer comes due only when its dispatch lease runs out (15 s,
doubled for each dispatch that never started). Under steady kills that was the tail of recovery
(issue 18). A started step needs none of this: its heartbeat keeps a short step lease, and a dead
worker's refund comes due when that lease lapses.

Each worker's main process beats about once a second (``worker.liveness``): its name in
``rp:workers`` scored with Redis TIME, and the step messages it holds (reserved or running,
``ref -> fence``) in ``rp:worker:{name}``. The scheduler tick sweeps first: a worker whose last
beat is older than ``stale_after`` is gone; each dispatch it held that is still the refund's
current one and never started is made due now and marked lost (so the claim does not double the
next lease for it), and the tick hands it out again in the same run. Safety stays with the step
lease and the fences: a message that did start is left to its lease, and if a "gone" worker was
only slow, its old message is stale by the time it starts (the re-dispatch wrote a newer fence),
or the step lease keeps the new one from running alongside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import redis

from refunds.store.keys import TIMERS, WORKERS, record_key, worker_key
from refunds.store.scripts import Script

#: Seconds between a worker's liveness beats (``worker.liveness``).
BEAT_SECONDS = 1.0
#: Seconds of silence after which the tick counts a worker gone: three missed beats, so a worker
#: whose main process is briefly starved of CPU is not taken for dead (and if it is, the cost is
#: a message that finds itself stale, never a second step running).
STALE_AFTER_SECONDS = 3.0
#: How long a gone worker's list of held messages is kept if no tick sweeps it (a day: a tick
#: normally removes it within seconds; the TTL only bounds what a stopped scheduler leaves).
HELD_TTL_SECONDS = 86_400.0
#: Gone workers handled per sweep (the rest in the next tick's).
SWEEP_LIMIT = 20


@dataclass(frozen=True)
class GoneWorker:
    """A worker that stopped beating, and the refunds whose lost dispatch was made due again."""

    name: str
    silent_for: float  # seconds since its last beat
    redispatched: tuple[str, ...]


class WorkerRegistry:
    """The live workers' beats and held step messages (``rp:workers``, ``rp:worker:{name}``)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._beat = Script(client, "workers_beat")
        self._sweep = Script(client, "workers_sweep")

    def beat(self, name: str, held: Mapping[str, int]) -> None:
        """Record that worker ``name`` is alive and holds exactly ``held`` (ref -> fence)."""
        flat: list[str | int] = [name, repr(HELD_TTL_SECONDS)]
        for ref, fence in held.items():
            flat += [ref, int(fence)]
        self._beat(keys=[WORKERS, worker_key(name)], args=flat)

    def leave(self, name: str) -> None:
        """A clean shutdown: the worker's messages go back to the queue with its connection."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(WORKERS, name)
        pipe.delete(worker_key(name))
        pipe.execute()

    def sweep(self, stale_after: float) -> list[GoneWorker]:
        """Workers silent for ``stale_after`` seconds: their unstarted current dispatches made
        due now (see the module doc); answers each with what was made due."""
        flat = self._sweep(
            keys=[WORKERS, TIMERS],
            args=[repr(float(stale_after)), worker_key(""), record_key(""), SWEEP_LIMIT],
        )
        gone: list[GoneWorker] = []
        i = 0
        while i < len(flat):
            name, silent = str(flat[i]), float(flat[i + 1])
            i += 2
            refs: list[str] = []
            while str(flat[i]) != "":
                refs.append(str(flat[i]))
                i += 1
            i += 1
            gone.append(GoneWorker(name, silent, tuple(refs)))
        return gone

    def live(self) -> dict[str, float]:
        """Worker names and the Redis time of their last beat."""
        rows = cast(list[tuple[str, float]], self.redis.zrange(WORKERS, 0, -1, withscores=True))
        return {str(name): float(seen) for name, seen in rows}
