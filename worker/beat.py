"""A beat scheduler that sends only while it holds the cluster's beat lock.

Why a scheduler and not a check in the tick task: the lock must stop the *messages*, not only
their effect. With a check in the task, two beats still publish two ticks per interval, the
second one waking a worker to do nothing, and a race between them (the first tick's run not yet
recorded when the second starts) still lets both run. Here the only process that publishes is the
lock's holder, and before it sends it confirms (renews, token-checked) the lock unless it did so
less than ``BeatLock.renew_every`` ago (an eighth of the TTL: the key still carries its token
then), so a second ``celery beat``, or ``worker -B`` on every replica, sends nothing: it logs once
at WARNING that it stands by, naming the holder, and takes over when the holder's lock expires
(``refunds.store.beat.lock_ttl``: a few tick intervals) or is released at a clean shutdown.
Renewing at most once per ``renew_every``, not on every ``tick()`` call, matters because Celery
calls ``tick()`` in a busy loop for the last 10 ms before an entry is due (``refunds.store.beat``).

The narrow gap left: a holder frozen (SIGSTOP, a VM pause) between its renewal and its send for
longer than the TTL, or a host suspended (its monotonic clock stopped) within ``renew_every`` of a
confirmation, may send one tick after a standby took over. A doubled tick is harmless: the tick
claims due refunds atomically, so it only costs a no-op run.

This scheduler also turns off the ``task-sent`` event for what it sends (beat sends only the
tick): Flower then keeps no entry per tick. Beat runs in its own process (``worker -B`` forks it),
so the worker's own ``task_send_sent_event`` is untouched.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery.beat import PersistentScheduler

from config.redis_connection import redis_client
from config.settings import get_settings
from refunds.store.beat import BeatLock, lock_ttl
from refunds.store.epoch import EpochWatch

EPOCH_EVERY = 5.0  # seconds between two reads of the ledger's epoch by beat

log = logging.getLogger("refunds.beat")


class LockedScheduler(PersistentScheduler):  # type: ignore[misc] # celery is untyped
    """``PersistentScheduler`` that sends only while holding the beat lock (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self._interval = settings.tick_interval
        client = redis_client(settings)
        self.beat_lock = BeatLock(client, lock_ttl(settings.tick_interval))
        # Beat reads the ledger's epoch too (plain GETs, at most once per EPOCH_EVERY): a Redis
        # restarted empty is logged at ERROR and recorded for every process (refunds.store.epoch).
        self.epoch = EpochWatch(client, "beat", interval=EPOCH_EVERY)
        self._standing_by = False
        self._ever_held = False
        self._lock_unavailable = False
        super().__init__(*args, **kwargs)
        self.app.conf.task_send_sent_event = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        with contextlib.suppress(Exception):  # Redis away: the lock below says so, once
            self.epoch.check()
        try:
            holding = self.beat_lock.hold()
        except Exception as exc:  # noqa: BLE001 - Redis away: send nothing, retry next wake-up
            if not self._lock_unavailable:  # once per outage, not once per wake-up
                self._lock_unavailable = True
                log.warning("beat lock unavailable (%s); not scheduling", type(exc).__name__)
            return self._interval
        self._lock_unavailable = False
        if not holding:
            if not self._standing_by:
                self._standing_by = True
                log.warning(
                    "another beat schedules (holder %s); this beat (%s) stands by and takes "
                    "over if the holder stops renewing for %g s",
                    self.beat_lock.holder(),
                    self.beat_lock.name,
                    self.beat_lock.ttl,
                )
            return self._interval
        if self._standing_by or not self._ever_held:
            log.warning(
                "this beat (%s) %s the scheduler",
                self.beat_lock.name,
                "took over as" if self._standing_by else "is",
            )
            self._standing_by = False
            self._ever_held = True
        # Wake up at least once per interval, so the lock is renewed well within its TTL.
        return float(min(super().tick(*args, **kwargs), self._interval))

    def close(self) -> None:
        try:
            super().close()
        finally:
            try:
                self.beat_lock.release()
            except Exception:  # noqa: BLE001 - at shutdown the lock's TTL covers us anyway
                log.info("could not release the beat lock; it expires in %g s", self.beat_lock.ttl)
