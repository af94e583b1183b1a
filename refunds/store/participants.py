"""Operator pauses of single participants (``refunds participant pause|resume CODE``), and the
count of refunds submitted per participant (the ``participant`` metric label).

One hash ``rp:participants:paused``: participantCode -> JSON ``{"at", "by", "reason"}``. A paused
participant's provider calls are not sent (``refunds.mce.client``: the step is throttled and goes
back on its timer, not counted as an attempt), so its work waits without being lost and resumes
when the entry is removed. Each process reads the hash at most every ``CHECK_SECONDS``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import redis

from refunds.store.keys import PARTICIPANTS_PAUSED, PARTICIPANTS_SUBMITTED

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

CHECK_SECONDS = 0.5  # how stale a process's view of the pauses may be


class ParticipantPauses:
    """The paused participants, shared by every process."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._mutex = threading.Lock()
        self._seen: frozenset[str] = frozenset()
        self._seen_at = float("-inf")

    @classmethod
    def of(cls, ledger: Ledger) -> ParticipantPauses:
        return cls(ledger.redis)

    def pause(self, code: str, by: str, reason: str, at: float) -> bool:
        """Pause ``code``; False when it was paused already (the first pause is kept)."""
        entry = json.dumps({"at": at, "by": by, "reason": reason})
        return bool(self.redis.hsetnx(PARTICIPANTS_PAUSED, code, entry))

    def resume(self, code: str) -> bool:
        """Resume ``code``; False when it was not paused."""
        return bool(self.redis.hdel(PARTICIPANTS_PAUSED, code))

    def all(self) -> dict[str, dict[str, Any]]:
        """participantCode -> its pause (when, by whom, why)."""
        raw = cast(dict[str, str], self.redis.hgetall(PARTICIPANTS_PAUSED))
        return {code: json.loads(entry) for code, entry in raw.items()}

    def count_submitted(self, codes: list[str]) -> None:
        """Count new refunds per participant (one round trip for a batch)."""
        if not codes:
            return
        pipe = self.redis.pipeline(transaction=False)
        for code in codes:
            pipe.hincrby(PARTICIPANTS_SUBMITTED, code, 1)
        pipe.execute()

    def submitted(self) -> dict[str, int]:
        """participantCode -> refunds submitted for it."""
        raw = cast(dict[str, str], self.redis.hgetall(PARTICIPANTS_SUBMITTED))
        return {code: int(n) for code, n in raw.items()}

    def is_paused(self, code: str) -> bool:
        """Whether ``code`` is paused, as this process saw it at most ``CHECK_SECONDS`` ago."""
        at = time.monotonic()
        with self._mutex:
            if at - self._seen_at > CHECK_SECONDS:
                self._seen = frozenset(cast(list[str], self.redis.hkeys(PARTICIPANTS_PAUSED)))
                self._seen_at = at
            return code in self._seen
