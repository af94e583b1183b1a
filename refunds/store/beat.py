"""The beat lock: only one Celery beat (or ``worker -B``) sends the scheduler tick at a time.

Every beat process competes for one Redis key whose value names its holder (``host:pid:nonce``,
so the logs of every process say who schedules). The holder renews it when its scheduler wakes up
and the last confirmation is at least ``renew_every`` old (an eighth of the TTL by default: about
once per tick interval); the others stand by and retry at every wake-up. If the holder dies, its
key expires after ``ttl`` seconds (a few tick intervals) and a standby takes over, so a crashed
beat costs at most one TTL of ticks, and two beats never double the tick rate.

Why not renew at every wake-up: Celery's scheduler wakes up 10 ms early (``Scheduler.adjust``'s
drift) and then calls ``tick()`` in a loop without sleeping until the entry is due, so "every
wake-up" was 10 to 20 renewals (EVALSHAs) within a few milliseconds before each tick sent.

Built on redis-py's ``Lock`` (token-checked Lua scripts for renew and release), non-blocking.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time

import redis
from redis.exceptions import LockError
from redis.lock import Lock

from refunds.store.keys import BEAT_LOCK as BEAT_LOCK_KEY

# The one place this key is named (a later refunds/store/keys.py may take it over).
# string: the holder's name, "host:pid:nonce"; expires ``lock_ttl`` seconds after its last renewal.


def holder_name() -> str:
    """``hostname:pid:nonce``: who holds the lock, as the logs show it (no secret)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def lock_ttl(tick_interval: float) -> float:
    """Seconds the lock lives without renewal: four tick intervals, at least 2 s."""
    return max(2.0, 4 * tick_interval)


class BeatLock:
    """One beat's claim on the scheduling role.

    ``hold()`` is called each time the scheduler wakes up: it acquires the lock if it is free,
    renews it if this process holds it and its last confirmation is ``renew_every`` seconds old or
    more, and answers whether this process may send now. Renewal checks the token atomically, so a
    beat that lost the lock (a pause longer than the TTL) finds out before sending, instead of
    doubling ticks with the new holder.

    Answering "held" without a round trip for ``renew_every`` is safe: a confirmation at monotonic
    time t (taken before the command was sent) means the key carries our token until at least
    t + ``ttl``, and ``renew_every`` is well under ``ttl``, so nobody else can have acquired it
    meanwhile. Only a key removed behind the lock's back (FLUSHALL, a Redis restart that lost it)
    can let a standby send while this holder still trusts its last confirmation, for at most
    ``renew_every``: a doubled tick, which is harmless (the tick's claim is atomic).
    """

    def __init__(
        self,
        client: redis.Redis,
        ttl: float,
        name: str | None = None,
        renew_every: float | None = None,
    ) -> None:
        self.redis = client
        self.ttl = ttl
        self.renew_every = ttl / 8 if renew_every is None else renew_every
        self.name = name or holder_name()
        self._lock = Lock(client, BEAT_LOCK_KEY, timeout=ttl, blocking=False, thread_local=False)
        self._held = False
        self._confirmed_at = float("-inf")  # monotonic time before the last successful hold

    @property
    def held(self) -> bool:
        """Whether the last ``hold()`` answered yes."""
        return self._held

    def hold(self) -> bool:
        """Acquire or renew (at most once per ``renew_every``); True when this process is the
        one beat that sends. Raises the redis error of a Redis that cannot be reached."""
        started = time.monotonic()
        if self._held:
            if started - self._confirmed_at < self.renew_every:
                return True
            self._confirmed_at = float("-inf")  # a failed round trip confirms nothing
            try:
                self._lock.reacquire()  # resets the TTL only if the key still carries our token
                self._confirmed_at = started
                return True
            except LockError:
                self._held = False
        self._held = bool(self._lock.acquire(blocking=False, token=self.name))
        if self._held:
            self._confirmed_at = started
        return self._held

    def holder(self) -> str | None:
        """The current holder's name (None: nobody holds it)."""
        value = self.redis.get(BEAT_LOCK_KEY)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    def release(self) -> None:
        """Give the role up at shutdown, so a standby takes over at its next wake-up."""
        if not self._held:
            return
        self._held = False
        with contextlib.suppress(LockError):  # expired or taken over: nothing of ours to release
            self._lock.release()
