"""The outbox of outcome notifications: the Redis part of ``refunds.notify``.

``rp:outbox`` is a sorted set of ``task:{ref}`` / ``http:{ref}`` members by due time, filled by
the ledger's transition to a final state (same script, so a crash cannot lose a notification) and
claimed under a lease by the scheduler tick like refunds (``Timers.claim_outbox``). Failed
attempts are counted in ``rp:outbox:attempts``; ``rp:outbox:failing`` remembers when the entry
first failed and its last error, so giving up is a matter of time, not of attempts. Members given
up on move to ``rp:outbox:dead`` (by the time they died) with what an operator needs to judge them
in ``rp:outbox:dead:info``; ``replay`` puts them back, due at once, with a fresh give-up window.
The delivery policy (backoff, give-up time) stays in ``refunds.notify``.

Times written by the scripts come from Redis ``TIME``, one clock for every process whatever its
host's clock says (issue 11); the explicit-time methods (``retry_at``, ``bury``) remain for callers
that already hold a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import redis

from refunds.store.keys import (
    ARCHIVE_QUEUE,
    OUTBOX,
    OUTBOX_ATTEMPTS,
    OUTBOX_DEAD,
    OUTBOX_DEAD_INFO,
    OUTBOX_FAILING,
)
from refunds.store.scripts import Script

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

_ERROR_CHARS = 500  # a last error is a one-line reason, never a response body


@dataclass(frozen=True)
class Failure:
    """One failed attempt as the outbox recorded it (times: Redis ``TIME``, epoch seconds)."""

    attempts: int
    first: float  # when the entry first failed (the start of its give-up window)
    now: float

    @property
    def failing_for(self) -> float:
        return max(0.0, self.now - self.first)


@dataclass(frozen=True)
class DeadLetter:
    """A notification given up on: ``refunds notifications dead`` shows these."""

    member: str
    at: float  # when it was given up (epoch seconds)
    attempts: int
    error: str
    first: float  # when it first failed

    @property
    def channel(self) -> str:
        return self.member.partition(":")[0]

    @property
    def client_reference(self) -> str:
        return self.member.partition(":")[2]


class Outbox:
    """Outbox entries, their attempt counts and dead letters."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._done = Script(client, "outbox_done")
        self._failed = Script(client, "outbox_failed")
        self._retry_in = Script(client, "outbox_retry_in")
        self._bury = Script(client, "outbox_bury")
        self._replay = Script(client, "outbox_replay")

    @classmethod
    def of(cls, ledger: Ledger) -> Outbox:
        """The outbox in the ledger's database."""
        return cls(ledger.redis)

    def done(self, member: str) -> None:
        """The entry was delivered (or is undeliverable by design): remove it and its failures."""
        self._done(keys=[OUTBOX, OUTBOX_ATTEMPTS, OUTBOX_FAILING, ARCHIVE_QUEUE], args=[member])

    def failed(self, member: str, error: str = "") -> int:
        """Count one failed attempt; returns the attempts so far."""
        return self.record_failure(member, error).attempts

    def record_failure(self, member: str, error: str) -> Failure:
        """Count one failed attempt and keep ``error`` (truncated) as the last one."""
        raw = cast(
            list[Any],
            self._failed(
                keys=[OUTBOX_ATTEMPTS, OUTBOX_FAILING, ARCHIVE_QUEUE],
                args=[member, error[:_ERROR_CHARS]],
            ),
        )
        return Failure(int(raw[0]), float(raw[1]), float(raw[2]))

    def retry_at(self, member: str, due: float) -> None:
        """Come due again at ``due`` (epoch seconds)."""
        self.redis.zadd(OUTBOX, {member: due})

    def retry_in(self, member: str, delay: float) -> float:
        """Come due again ``delay`` seconds after Redis' now; returns the due time."""
        return float(cast(str, self._retry_in(keys=[OUTBOX], args=[member, repr(delay)])))

    def bury(self, member: str, at: float | None = None) -> None:
        """Give up on the entry: it leaves the outbox for the dead letters, atomically.

        ``at`` is the time of death (epoch seconds); by default Redis' now.
        """
        self._bury(
            keys=[
                OUTBOX,
                OUTBOX_DEAD,
                OUTBOX_ATTEMPTS,
                OUTBOX_FAILING,
                OUTBOX_DEAD_INFO,
                ARCHIVE_QUEUE,
            ],
            args=[member, "" if at is None else repr(at)],
        )

    def replay(self, members: list[str]) -> list[str]:
        """Dead letters back into the outbox, due now; returns those that were dead letters."""
        if not members:
            return []
        moved = self._replay(keys=[OUTBOX, OUTBOX_DEAD, OUTBOX_DEAD_INFO], args=members)
        return [str(m) for m in cast(list[Any], moved)]

    def pending(self) -> list[tuple[str, float]]:
        """Entries waiting, ``(member, due)`` soonest first."""
        return cast(list[tuple[str, float]], self.redis.zrange(OUTBOX, 0, -1, withscores=True))

    def due_at(self, member: str) -> float | None:
        score = self.redis.zscore(OUTBOX, member)
        return None if score is None else float(score)

    def attempts(self, member: str) -> int:
        return int(cast(str | None, self.redis.hget(OUTBOX_ATTEMPTS, member)) or 0)

    def last_error(self, member: str) -> str | None:
        """The last failed attempt's error of an entry still in the outbox (None: none failed)."""
        raw = cast(str | None, self.redis.hget(OUTBOX_FAILING, member))
        return None if raw is None else str(json.loads(raw).get("error", ""))

    def dead(self) -> list[str]:
        """Members given up on, oldest first."""
        return cast(list[str], self.redis.zrange(OUTBOX_DEAD, 0, -1))

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters with their attempts, last error and times, oldest first."""
        end = -1 if limit is None else max(0, limit - 1)
        if limit == 0:
            return []
        rows = cast(
            list[tuple[str, float]], self.redis.zrange(OUTBOX_DEAD, 0, end, withscores=True)
        )
        if not rows:
            return []
        infos = cast(
            list[str | None], self.redis.hmget(OUTBOX_DEAD_INFO, [m for m, _ in rows])
        )
        letters = []
        for (member, at), raw in zip(rows, infos, strict=True):
            info: dict[str, Any] = json.loads(raw) if raw else {}
            letters.append(
                DeadLetter(
                    member=member,
                    at=float(at),
                    attempts=int(info.get("attempts") or 0),
                    error=str(info.get("error") or ""),
                    first=float(info.get("first") or at),
                )
            )
        return letters

    def dead_count(self) -> int:
        """How many notifications were given up on and not replayed."""
        return int(self.redis.zcard(OUTBOX_DEAD))

    def count(self) -> int:
        return int(self.redis.zcard(OUTBOX))
