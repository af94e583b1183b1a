"""Deciding which fault, if any, hits a provider call.

Decisions only: the provider layer applies them in the contract's order (rate limit, latency,
injected error before the effect, lost/slow after it). All randomness comes from one seedable
``random.Random`` so a failing chaos run can be replayed with the same ``--seed``. This object has
its own small lock for the generator and the rate-limit bucket; it holds no provider state.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Literal

from sandbox.config import INJECTABLE_ERRORS, SandboxConfig

AfterEffect = Literal["lost", "slow"] | None


class FaultInjector:
    def __init__(
        self, seed: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._bucket = float("inf")
        self._bucket_at = clock()

    def reset(self) -> None:
        """Re-seed and refill, so a run after ``/sandbox/reset`` replays the same fault sequence."""
        with self._lock:
            self._rng = random.Random(self._seed)
            self._bucket = float("inf")
            self._bucket_at = self._clock()

    def admit(self, max_rps: float | None) -> bool:
        """Token bucket over limited calls: refills at ``max_rps``, bursts up to max(1, max_rps).

        A bucket rather than a fixed window, so that fractional limits (0.5 rps) work and a client
        pacing itself at exactly the limit is not punished for a burst at a window edge.
        """
        with self._lock:
            now = self._clock()
            if max_rps is None:
                self._bucket, self._bucket_at = float("inf"), now
                return True
            capacity = max(1.0, max_rps)
            self._bucket = min(capacity, self._bucket + (now - self._bucket_at) * max_rps)
            self._bucket_at = now
            if self._bucket >= 1.0:
                self._bucket -= 1.0
                return True
            return False

    def pick_error(self, config: SandboxConfig) -> str | None:
        """One draw over the error rates: "429", "500", "502", "503" or None (do the work)."""
        rates = config.error_rates
        if not any(rates.values()):
            return None
        with self._lock:
            draw = self._rng.random()
        threshold = 0.0
        for status in INJECTABLE_ERRORS:
            threshold += rates.get(status, 0.0)
            if draw < threshold:
                return status
        return None

    def pick_after_effect(self, config: SandboxConfig) -> AfterEffect:
        """After the work is done: lose the response, delay it, or neither (lost wins a tie)."""
        with self._lock:
            if config.lost_rate and self._rng.random() < config.lost_rate:
                return "lost"
            if config.slow_rate and self._rng.random() < config.slow_rate:
                return "slow"
        return None
