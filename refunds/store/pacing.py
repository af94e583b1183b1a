"""Global pacing of MCE calls: one schedule in Redis shared by every worker process.

MCE's rate limit applies to our credentials, so the pace is kept cluster-wide. The limiter is a
GCRA ("generic cell rate algorithm") schedule: one Redis key holds the theoretical arrival time
(TAT) of the next permitted call; each call reserves the slot at ``max(now, TAT)`` and moves TAT on
by ``1 / MCE_MAX_RPS``. The script reads Redis's own clock (``TIME``), so workers on machines with
skewed clocks still share one schedule.

Why hand-written: the well-kept Python limiters (``limits``, ``pyrate-limiter``) answer "allowed
or not within a window". A window of N per second lets N calls leave at once at the start of each
window, and a provider that enforces its limit over a shorter interval answers such bursts with
429s. Pacing needs a reservation (when may this call go?), which GCRA gives in one short script.

A reservation that starts within ``max_wait`` seconds is taken and the caller sleeps that long (a
few milliseconds of smoothing); a later one is not taken, and the caller is told how long to wait,
so a step goes back on the timer instead of sleeping in a worker slot. A 429 pushes the schedule
back for the whole cluster: every worker's next reservation starts after ``Retry-After``.

A token endpoint refusing our credentials (401/403, contract section 3) is the same kind of
cluster-wide condition, for longer: :class:`CredentialsGate` pushes the schedule back by
``REFUNDS_AUTH_PAUSE_SECONDS``, raises a flag (whoever sets it first logs the ERROR, once per
incident) and, while the flag stands, lets one token call per pause through (the probe).

Both are per credential (the limit and the refusal belong to the login, contract section 8):
``credential=None`` is the one credential of a deployment without a registry file and keeps the
single-credential keys; a registry credential has its own schedule and gate, so a refused or
throttled credential holds back only its own participants.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from refunds.store.keys import (
    PACE,
    credential_pace_key,
    credential_probe_key,
    credential_refused_key,
)
from refunds.store.scripts import Script

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

PACE_KEY = PACE  # the GCRA schedule (see store.keys)
# Without MCE_MAX_RPS, how stale a process's view of a cluster-wide push-back may be.
_UNPACED_CHECK_SECONDS = 0.25


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait: float  # seconds until the slot (granted: sleep this long; refused: come back then)


class Pacer:
    """Cluster-wide pacing of provider calls. ``max_rps=None`` still honours 429 push-backs."""

    def __init__(
        self,
        client: redis.Redis,
        max_rps: float | None,
        max_wait: float,
        credential: str | None = None,
    ) -> None:
        self.key = credential_pace_key(credential)
        self.interval = 1.0 / max_rps if max_rps else 0.0
        self.max_wait = max_wait
        self._reserve = Script(client, "pace_reserve")
        self._push_back = Script(client, "pace_push_back")
        self._wait = Script(client, "pace_wait")
        self.max_rps = max_rps
        self._checked_at = float("-inf")
        self._paused_until = 0.0

    @classmethod
    def of(
        cls,
        ledger: Ledger,
        max_rps: float | None,
        max_wait: float,
        credential: str | None = None,
    ) -> Pacer:
        """The pacer of ``credential`` (None: the one credential) on the ledger's database."""
        return cls(ledger.redis, max_rps, max_wait, credential)

    def reserve(self) -> Reservation:
        granted, wait = self._reserve(
            keys=[self.key], args=[repr(self.interval), repr(self.max_wait)]
        )
        return Reservation(bool(int(granted)), max(0.0, float(wait)))

    def acquire(self) -> float | None:
        """Take a slot, sleeping up to ``max_wait``; None when taken, else seconds to wait."""
        if not self.interval:
            # No rate configured: only a 429's push-back can hold us, so read the schedule at
            # most every few hundred milliseconds instead of running a script per call.
            at = time.monotonic()
            if at - self._checked_at > _UNPACED_CHECK_SECONDS:
                self._paused_until = at + self.wait_now()
                self._checked_at = at
            wait = self._paused_until - at
            if wait > self.max_wait:
                return wait
            if wait > 0:
                time.sleep(wait)
            return None
        reservation = self.reserve()
        if not reservation.granted:
            return reservation.wait
        if reservation.wait > 0:
            time.sleep(reservation.wait)
        return None

    def wait_now(self) -> float:
        """Seconds until the schedule has a free slot (a 429's push-back shows here)."""
        return float(self._wait(keys=[self.key]))

    def push_back(self, seconds: float) -> float:
        """After a 429: no worker calls before ``seconds`` from now. Returns the actual delay."""
        delay = float(self._push_back(keys=[self.key], args=[repr(max(0.0, seconds))]))
        self._paused_until = time.monotonic() + delay
        self._checked_at = time.monotonic()
        return delay


# How much longer than one pause the flag outlives the last refusal: a probe refreshes it every
# pause, so it stands for the whole incident and lapses on its own when nobody probes any more.
FLAG_PAUSES = 10


class CredentialsGate:
    """The cluster-wide pause after the token endpoint refused our credentials (401/403).

    Shapes: ``pause`` in seconds; times in epoch seconds. The flag ``rp:mce:auth:refused`` holds
    when the incident was first seen; it lives ``FLAG_PAUSES`` pauses past the last refusal.
    """

    def __init__(self, client: redis.Redis, pause: float, credential: str | None = None) -> None:
        self.redis = client
        self.pause = pause
        self.credential = credential
        self._keys = (credential_refused_key(credential), credential_probe_key(credential))
        self._pace_key = credential_pace_key(credential)
        self._refused = Script(client, "auth_refused")
        self._probe = Script(client, "auth_probe")
        self._accepted = Script(client, "auth_accepted")

    def refused(self) -> bool:
        """Record a refusal; True for the one caller that noticed first (it logs the ERROR)."""
        ttl_ms = math.ceil(self.pause * FLAG_PAUSES * 1000)
        first = self._refused(
            keys=[*self._keys, self._pace_key],
            args=[repr(self.pause), str(ttl_ms), repr(time.time())],
        )
        return bool(int(first))

    def may_call(self) -> float | None:
        """Before a token call: None when it may go, else seconds until the next probe may."""
        args = [repr(self.pause), repr(time.time())]
        wait_ms = int(self._probe(keys=list(self._keys), args=args))
        return None if wait_ms < 0 else wait_ms / 1000.0

    def accepted(self) -> bool:
        """After a token call succeeded: end the incident; True when there was one."""
        return bool(int(self._accepted(keys=list(self._keys))))

    def refused_since(self) -> float | None:
        """When the current incident was first seen (epoch seconds), or None when there is none."""
        return credentials_refused_since(self.redis, self.credential)


def credentials_refused_since(client: redis.Redis, credential: str | None = None) -> float | None:
    """When the token endpoint began refusing our credentials (epoch seconds), or None when it
    does not (no incident, or none probed for ``FLAG_PAUSES`` pauses): stats, metrics, health."""
    raw = client.get(credential_refused_key(credential))
    return None if raw is None else float(raw)
