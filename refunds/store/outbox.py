"""The outbox of outcome notifications: the Redis part of ``refunds.notify``.

``rp:outbox`` is a sorted set of ``task:{ref}`` / ``http:{ref}`` members by due time, filled by
the ledger's transition to a final state (same script, so a crash cannot lose a notification) and
claimed under a lease by the scheduler tick like refunds (``Timers.claim_outbox``). Failed
attempts are counted in ``rp:outbox:attempts``; members given up on move to ``rp:outbox:dead``.
The delivery policy (backoff, attempts) stays in ``refunds.notify``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import redis

from refunds.store.keys import OUTBOX, OUTBOX_ATTEMPTS, OUTBOX_DEAD

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

# KEYS: outbox, attempts. ARGV: member. Delivered: forget the entry and its attempt count at once.
_DONE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: outbox. ARGV: seconds from Redis TIME, member. Come due again after a failed delivery.
_RETRY_IN = """
local t = redis.call('TIME')
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
return redis.call('ZADD', KEYS[1], string.format('%.6f', due), ARGV[2])
"""

# KEYS: outbox, dead. ARGV: member, now. Given up: out of the outbox and into the dead letters.
_BURY = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""


class Outbox:
    """Outbox entries, their attempt counts and dead letters."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._done = client.register_script(_DONE)
        self._bury = client.register_script(_BURY)
        self._retry_in = client.register_script(_RETRY_IN)

    @classmethod
    def of(cls, ledger: Ledger) -> Outbox:
        """The outbox in the ledger's database."""
        return cls(ledger.redis)

    def done(self, member: str) -> None:
        """The entry was delivered (or is undeliverable by design): remove it and its count."""
        self._done(keys=[OUTBOX, OUTBOX_ATTEMPTS], args=[member])

    def failed(self, member: str) -> int:
        """Count one failed attempt; returns the attempts so far."""
        return int(self.redis.hincrby(OUTBOX_ATTEMPTS, member, 1))

    def retry_at(self, member: str, due: float) -> None:
        """Come due again at ``due`` (epoch seconds)."""
        self.redis.zadd(OUTBOX, {member: due})

    def retry_in(self, member: str, seconds: float) -> None:
        """Come due again ``seconds`` from now on Redis's clock (the one clock of due times)."""
        self._retry_in(keys=[OUTBOX], args=[repr(float(seconds)), member])

    def bury(self, member: str, at: float) -> None:
        """Give up on the entry: it leaves the outbox for the dead letters, atomically."""
        self._bury(keys=[OUTBOX, OUTBOX_DEAD], args=[member, repr(at)])

    def pending(self) -> list[tuple[str, float]]:
        """Entries waiting, ``(member, due)`` soonest first."""
        return cast(list[tuple[str, float]], self.redis.zrange(OUTBOX, 0, -1, withscores=True))

    def due_at(self, member: str) -> float | None:
        score = self.redis.zscore(OUTBOX, member)
        return None if score is None else float(score)

    def attempts(self, member: str) -> int:
        return int(cast(str | None, self.redis.hget(OUTBOX_ATTEMPTS, member)) or 0)

    def dead(self) -> list[str]:
        """Members given up on, oldest first."""
        return cast(list[str], self.redis.zrange(OUTBOX_DEAD, 0, -1))

    def count(self) -> int:
        return int(self.redis.zcard(OUTBOX))
