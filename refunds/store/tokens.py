"""Storage of the cluster's bearer token (the policy around it is ``refunds.mce.auth``).

One hash ``rp:mce:token`` (token, refresh margin in seconds) whose relative Redis expiry is the
token's lifetime (its PTTL is the lifetime left: no host clock decides it), and
a single-flight lock ``rp:mce:token:lock`` (redis-py's ``Lock``: non-blocking, with a timeout).
The token is written only here, never logged.

With a registry file (``refunds.participants``) each credential has its own hash, lock and
credentials gate (``rp:cred:{id}:...``); ``credential=None``, the one credential of a deployment
without a registry, keeps the keys above, so an upgrade finds its cached token where it left it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, cast

import redis
from redis.exceptions import LockNotOwnedError
from redis.lock import Lock

from refunds.store.keys import (
    TOKEN_FETCHES,
    credential_token_key,
    credential_token_lock_key,
)
from refunds.store.pacing import CredentialsGate
from refunds.store.scripts import Script

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger


class TokenStore:
    """The cached token and its refresh lock in Redis."""

    def __init__(self, client: redis.Redis, credential: str | None = None) -> None:
        self.redis = client
        self.credential = credential
        self.key = credential_token_key(credential)
        self.lock_key = credential_token_lock_key(credential)
        self._invalidate = Script(client, "token_invalidate")

    @classmethod
    def of(cls, ledger: Ledger, credential: str | None = None) -> TokenStore:
        """The token storage of ``credential`` (None: the one credential) in the ledger's
        database."""
        return cls(ledger.redis, credential)

    def credentials_gate(self, pause: float) -> CredentialsGate:
        """The cluster-wide pause after this credential was refused, on this store's database."""
        return CredentialsGate(self.redis, pause, self.credential)

    def read(self) -> tuple[str, float, float] | None:
        """``(token, seconds it still lives, refresh margin in seconds)``, or None when none is
        cached. The lifetime left is the key's Redis PTTL: no host clock takes part."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.key, ["token", "margin"])
        pipe.pttl(self.key)
        raw, ttl = cast(tuple[list[str | None], int], tuple(pipe.execute()))
        if not raw[0] or int(ttl) <= 0:
            return None
        return str(raw[0]), int(ttl) / 1000, float(raw[1] or 0)

    def write(self, value: str, lifetime: float, margin: float) -> None:
        """Cache a freshly fetched token for ``lifetime`` seconds from now (a relative Redis
        expiry, PEXPIRE: a host clock that is wrong cannot expire it early or keep it late),
        with its refresh ``margin`` (seconds), and count the fetch, atomically."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, mapping={"token": value, "margin": repr(float(margin))})
        pipe.hdel(self.key, "expires", "refresh")  # written by releases that used epoch times
        pipe.pexpire(self.key, max(1, int(lifetime * 1000)))
        pipe.incr(TOKEN_FETCHES)
        pipe.execute()

    def invalidate(self, value: str) -> bool:
        """Delete the cached token if it is still ``value``; True when deleted."""
        return bool(self._invalidate(keys=[self.key], args=[value]))

    def try_lock(self, seconds: float) -> Lock | None:
        """The refresh lock if free (non-blocking), held at most ``seconds``; else None."""
        lock = Lock(self.redis, self.lock_key, timeout=seconds, blocking=False, thread_local=False)
        return lock if lock.acquire() else None

    @staticmethod
    def unlock(lock: Lock) -> None:
        """Release a lock from :meth:`try_lock` if still ours (an expired one is left alone)."""
        with contextlib.suppress(LockNotOwnedError):
            lock.release()

    def clear(self) -> None:
        """Forget the cached token and any refresh lock (tests and operator resets)."""
        self.redis.delete(self.key, self.lock_key)
