"""One bearer token for the whole cluster, cached in Redis and refreshed ahead of expiry.

Shaped like google-auth's credentials: a token with an expiry, "valid" meaning present and not
within a margin of expiry. The margin scales with the lifetime (a fraction of it, capped), so a
token that lives eight seconds is still reused for most of its life (contract section 3).

Single flight: when the token needs refreshing, one process takes a Redis lock and fetches; the
others keep using the old token while it has not actually expired, or wait briefly for the new one.
A 401 invalidates exactly the token that was refused (compare-and-delete), so a late 401 for an
old token cannot throw away a fresh one. The token lives only in Redis and in process memory: never
in a task argument, a log line or an exception.

Refused credentials: a 401/403 from the token endpoint means our client id or secret is wrong
(contract section 3), the same for every process, so it is not retried per refund. The cluster's
provider calls pause for ``REFUNDS_AUTH_PAUSE_SECONDS`` (``store.pacing.CredentialsGate``), the
first process to notice logs one ERROR, and while the incident lasts one token call per pause
probes whether the credentials work again; every other caller is told to come back later
(``MceThrottledError``: the step goes back on its timer without counting an attempt).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from config.settings import Settings
from refunds.errors import MceAuthError, MceForbiddenError, MceThrottledError, MceTransientError
from refunds.mce.schemas import TokenData
from refunds.store.keys import TOKEN as TOKEN_KEY
from refunds.store.tokens import TokenStore

__all__ = ["TOKEN_KEY", "Token", "TokenCache"]

log = logging.getLogger("refunds.auth")

# A token this close to its hard expiry is not sent at all, even while another process refreshes.
_HARD_SKEW = 0.5


@dataclass(frozen=True)
class Token:
    """A token and, on this process's ``time.monotonic()`` clock, when it expires and when to
    refresh it (derived from Redis's PTTL or the provider's ``expires_in``, never the wall
    clock, so a host whose clock is wrong neither refreshes in a storm nor sends expired ones)."""

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
        self,
        store: TokenStore | redis.Redis,
        settings: Settings,
        fetch: Callable[[], TokenData],
    ) -> None:
        # A bare client is wrapped: the storage (keys, lock) is the store's business.
        self.store = store if isinstance(store, TokenStore) else TokenStore(store)
        self.settings = settings
        self.fetch = fetch
        self._local: Token | None = None
        self._mutex = threading.Lock()
        self.fetches = 0  # token calls made by this process (for tests and stats)
        self.gate = self.store.credentials_gate(settings.auth_pause_seconds)

    def margin(self, lifetime: float) -> float:
        return min(
            lifetime * self.settings.token_refresh_fraction, self.settings.token_refresh_max_margin
        )

    def _read(self) -> Token | None:
        at = time.monotonic()
        raw = self.store.read()
        if raw is None:
            return None
        value, left, margin = raw
        return Token(value, at + left, at + left - margin)

    def get(self) -> str:
        """A token to send now: from memory, from Redis, or freshly fetched under the lock."""
        at = time.monotonic()
        local = self._local
        if local is not None and local.fresh(at):
            return local.value
        with self._mutex:  # threads of one process queue here instead of all hitting Redis
            shared = self._read()
            if shared is not None and shared.fresh(time.monotonic()):
                self._local = shared
                return shared.value
            return self._refresh(shared).value

    def _refresh(self, current: Token | None) -> Token:
        deadline = time.monotonic() + self.settings.token_wait_seconds
        while True:
            lock = self.store.try_lock(self.settings.token_lock_seconds)
            if lock is not None:
                try:
                    shared = self._read()  # someone may have refreshed between our read and lock
                    if shared is not None and shared.fresh(time.monotonic()):
                        self._local = shared
                        return shared
                    return self._fetch_and_store()
                finally:
                    self.store.unlock(lock)
            if current is not None and current.usable(time.monotonic()):
                self._local = current
                return current
            time.sleep(0.05)
            shared = self._read()
            if shared is not None and shared.fresh(time.monotonic()):
                self._local = shared
                return shared
            if time.monotonic() > deadline:
                raise MceTransientError(
                    "timed out waiting for another process's token refresh", operation="token"
                )

    def _fetch_and_store(self) -> Token:
        asked = time.monotonic()
        data = self._fetch_guarded()
        self.fetches += 1
        at = time.monotonic()
        # The lifetime counts from the request (the provider's clock started no later).
        lifetime = max(0.0, data.expires_in - (at - asked))
        margin = self.margin(data.expires_in)
        token = Token(data.access_token, asked + data.expires_in, asked + data.expires_in - margin)
        self.store.write(token.value, lifetime, margin)
        self._local = token
        return token

    def _fetch_guarded(self) -> TokenData:
        """The token call, unless the credentials are known refused and this is not the probe."""
        wait = self.gate.may_call()
        if wait is not None:
            raise MceThrottledError(
                f"MCE credentials refused: provider calls paused, next probe in {wait:.2f}s",
                retry_after=wait,
                operation="token",
            )
        try:
            data = self.fetch()
        except (MceAuthError, MceForbiddenError) as exc:
            pause = self.settings.auth_pause_seconds
            if self.gate.refused():
                cred = self.store.credential
                log.error(  # noqa: TRY400 - the traceback is ours; the message says it all
                    "MCE token endpoint refused our credentials (HTTP %s %s): every provider "
                    "call %s pauses, one token call every %.0fs probes until they work; check %s",
                    exc.status,
                    exc.code or "",
                    "of the cluster" if cred is None else f"of credential {cred}",
                    pause,
                    "MCE_CLIENT_ID and MCE_CLIENT_SECRET"
                    if cred is None
                    else f"credential {cred}'s client_id and client_secret (registry)",
                    extra={"operation": "token", "status": exc.status, "code": exc.code},
                )
            raise MceThrottledError(
                f"MCE credentials refused (HTTP {exc.status}): provider calls paused {pause:.0f}s",
                retry_after=pause,
                operation="token",
            ) from None
        if self.gate.accepted():
            log.warning(
                "MCE token endpoint accepts our credentials again: provider calls resume",
                extra={"operation": "token"},
            )
        return data

    def invalidate(self, value: str) -> None:
        """Forget ``value`` after a 401, here and cluster-wide, unless already replaced."""
        local = self._local
        if local is not None and local.value == value:
            self._local = None
        self.store.invalidate(value)
