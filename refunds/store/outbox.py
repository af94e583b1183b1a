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

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

_ERROR_CHARS = 500  # a last error is a one-line reason, never a response body

# Redis TIME as float seconds, inside a script.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: outbox, attempts, failing, archive queue. ARGV: member. Delivered: forget the entry and its
# failures; the outcome is queued for the SQL archive.
_DONE = """
redis.call('XADD', KEYS[4], '*', 'k', 'n', 'm', ARGV[1], 'o', 'delivered',
           'a', redis.call('HGET', KEYS[2], ARGV[1]) or '0', 'e', '')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""

# KEYS: attempts, failing, archive queue. ARGV: member, error.
# One failed attempt: count it, keep the first failure's time and the last error.
# Returns {attempts, first failure, now} (times as strings: Lua numbers lose precision in replies).
_FAILED = (
    _NOW
    + """
local attempts = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local first = now
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  first = cjson.decode(old)['first'] or now
end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({first = first, error = ARGV[2]}))
redis.call('XADD', KEYS[3], '*', 'k', 'n', 'm', ARGV[1], 'o', 'failed', 'a', attempts, 'e', ARGV[2])
return {attempts, tostring(first), tostring(now)}
"""
)

# KEYS: outbox. ARGV: member, delay seconds. Come due again ``delay`` after Redis' now.
_RETRY_IN = (
    _NOW
    + """
local due = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], due, ARGV[1])
return tostring(due)
"""
)

# KEYS: outbox, dead, attempts, failing, dead info, archive queue.
# ARGV: member, at ('' = Redis now).
# Given up: out of the outbox into the dead letters, with its attempts, first failure and last
# error, all in one step (a crash cannot leave it in both, or in neither).
_BURY = (
    _NOW
    + """
local at = now
if ARGV[2] ~= '' then at = tonumber(ARGV[2]) end
local attempts = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local first, err = at, ''
local old = redis.call('HGET', KEYS[4], ARGV[1])
if old then
  local f = cjson.decode(old)
  first = f['first'] or at
  err = f['error'] or ''
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], at, ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1],
  cjson.encode({attempts = attempts, error = err, first = first, at = at}))
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[6], '*', 'k', 'n', 'm', ARGV[1], 'o', 'dead', 'a', attempts, 'e', err)
return 1
"""
)

# KEYS: outbox, dead, dead info. ARGV: members. Back into the outbox, due now (Redis time), with a
# fresh give-up window; members that are not dead letters are skipped. Returns the ones moved.
_REPLAY = (
    _NOW
    + """
local moved = {}
for _, member in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[2], member) == 1 then
    redis.call('HDEL', KEYS[3], member)
    redis.call('ZADD', KEYS[1], now, member)
    table.insert(moved, member)
  end
end
return moved
"""
)


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
        self._done = client.register_script(_DONE)
        self._failed = client.register_script(_FAILED)
        self._retry_in = client.register_script(_RETRY_IN)
        self._bury = client.register_script(_BURY)
        self._replay = client.register_script(_REPLAY)

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
        infos = cast(list[str | None], self.redis.hmget(OUTBOX_DEAD_INFO, [m for m, _ in rows]))
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
