"""One bearer token for the whole cluster, cached in Redis and refreshed ahead of expiry.

Shaped like google-auth's credentials: a token with an expiry, "valid" meaning present and not
within a margin of expiry. The margin scales with the lifetime (a fraction of it, capped), so a
token that lives eight seconds is still reused for most of its life (contract section 3).

Single flight: when the token needs refreshing, one process takes a Redis lock and fetches; the
others keep using the old token while it has not actually expired, or wait briefly for the new one.
A 401 invalidates exactly the token that was refused (compare-and-delete), so a late 401 for an
old token cannot throw away a fresh one. The token lives only in Redis and in process memory: never
in a task argument, a log line or an exception.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from config.settings import Settings
from refunds.errors import MceTransientError
from refunds.mce.schemas import TokenData
from refunds.models import now
from refunds.ops.counters import TOKEN_FETCHES

TOKEN_KEY = "rp:mce:token"  # noqa: S105 - a Redis key name, not a token
LOCK_KEY = "rp:mce:token:lock"

_INVALIDATE = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A token this close to its hard expiry is not sent at all, even while another process refreshes.
_HARD_SKEW = 0.5


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float
    refresh_at: float

    def fresh(self, at: float) -> bool:
        """Good to use without refreshing."""
        return at < self.refresh_at

    def usable(self, at: float) -> bool:
        """Not expired yet: fine to use while someone else fetches the next one."""
        return at < self.expires_at - _HARD_SKEW

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at:.3f}, value=<redacted>)"


class TokenCache:
    """The cluster's bearer token; ``fetch`` performs the provider's Create Token call."""

    def __init__(
        self, client: redis.Redis, settings: Settings, fetch: Callable[[], TokenData]
    ) -> None:
        self.redis = client
        self.settings = settings
        self.fetch = fetch
        self._local: Token | None = None
        self._mutex = threading.Lock()
        self._invalidate = client.register_script(_INVALIDATE)
        self._release = client.register_script(_RELEASE)
        self.fetches = 0  # token calls made by this process (for tests and stats)

    def margin(self, lifetime: float) -> float:
        return min(
            lifetime * self.settings.token_refresh_fraction, self.settings.token_refresh_max_margin
        )

    def _read(self) -> Token | None:
        raw = self.redis.hmget(TOKEN_KEY, ["token", "expires", "refresh"])
        if not raw[0]:
            return None
        return Token(str(raw[0]), float(raw[1] or 0), float(raw[2] or 0))

    def get(self) -> str:
        """A token to send now: from memory, from Redis, or freshly fetched under the lock."""
        at = now()
        local = self._local
        if local is not None and local.fresh(at):
            return local.value
        with self._mutex:  # threads of one process queue here instead of all hitting Redis
            shared = self._read()
            if shared is not None and shared.fresh(now()):
                self._local = shared
                return shared.value
            return self._refresh(shared).value

    def _refresh(self, current: Token | None) -> Token:
        deadline = time.monotonic() + self.settings.token_wait_seconds
        while True:
            lock = secrets.token_hex(8)
            if self.redis.set(
                LOCK_KEY, lock, nx=True, px=int(self.settings.token_lock_seconds * 1000)
            ):
                try:
                    shared = self._read()  # someone may have refreshed between our read and lock
                    if shared is not None and shared.fresh(now()):
                        self._local = shared
                        return shared
                    return self._fetch_and_store()
                finally:
                    self._release(keys=[LOCK_KEY], args=[lock])
            if current is not None and current.usable(now()):
                self._local = current
                return current
            time.sleep(0.05)
            shared = self._read()
            if shared is not None and shared.fresh(now()):
                self._local = shared
                return shared
            if time.monotonic() > deadline:
                raise MceTransientError(
                    "timed out waiting for another process's token refresh", operation="token"
                )

    def _fetch_and_store(self) -> Token:
        data = self.fetch()
        self.fetches += 1
        at = now()
        expires = at + data.expires_in
        token = Token(data.access_token, expires, expires - self.margin(data.expires_in))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            TOKEN_KEY,
            mapping={
                "token": token.value,
                "expires": repr(token.expires_at),
                "refresh": repr(token.refresh_at),
            },
        )
        pipe.pexpireat(TOKEN_KEY, int(expires * 1000))
        pipe.incr(TOKEN_FETCHES)
        pipe.execute()
        self._local = token
        return token

    def invalidate(self, value: str) -> None:
        """Forget ``value`` after a 401, here and cluster-wide, unless already replaced."""
        local = self._local
        if local is not None and local.value == value:
            self._local = None
        self._invalidate(keys=[TOKEN_KEY], args=[value])
