"""One MCE client per participant, built per credential.

The token cache, its refresh lock, the credentials gate (a 401/403 on the token call) and the pace
belong to the credential (the MCE login, contract section 8), so every participant of one
credential shares them: a refused or throttled credential holds back only its own participants.
A participant's client differs from its credential's in one thing, the ``participantCode`` it
sends in Create and Confirm bodies and the Get query, and in its hold: a paused
(``refunds participant pause``) or disabled participant's calls are not sent, and its steps go
back on their timers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from config.settings import Settings
from refunds.mce.auth import TokenCache
from refunds.mce.client import MceClient
from refunds.ops.counters import Stats
from refunds.participants.registry import Credential, Participant, Registry
from refunds.store.ledger import Ledger
from refunds.store.pacing import Pacer
from refunds.store.participants import ParticipantPauses
from refunds.store.tokens import TokenStore

log = logging.getLogger("refunds.participants")


def credential_settings(settings: Settings, cred: Credential, code: str | None) -> Settings:
    """``settings`` as one participant of ``cred`` sees them (the fields the client reads)."""
    if cred.id is None and code == settings.mce_participant_code:
        return settings
    return settings.model_copy(
        update={
            "mce_base_url": cred.base_url,
            "mce_client_id": cred.client_id,
            "mce_client_secret": cred.client_secret,
            "mce_participant_code": code,
            "mce_max_rps": cred.max_rps,
        }
    )


class ParticipantClients:
    """The clients of a registry's participants, with their credentials' shared parts."""

    def __init__(self, settings: Settings, ledger: Ledger, stats: Stats, registry: Registry):
        self.settings = settings
        self.registry = registry
        self.pauses = ParticipantPauses.of(ledger)
        self.credentials: dict[str | None, MceClient] = {}
        for cred in registry.credentials.values():
            own = credential_settings(settings, cred, None)
            base = MceClient(
                own,
                pacer=Pacer.of(ledger, cred.max_rps, settings.pacing_max_wait, cred.id),
                stats=stats,
            )
            base.tokens = TokenCache(TokenStore.of(ledger, cred.id), own, base.fetch_token)
            self.credentials[cred.id] = base
        self.clients: dict[str | None, MceClient] = {
            part.code: self._client(part) for part in registry.participants.values()
        }

    def _client(self, part: Participant) -> MceClient:
        base = self.credentials[part.credential]
        cred = self.registry.credentials[part.credential]
        return MceClient(
            credential_settings(self.settings, cred, part.code),
            tokens=base.tokens,
            pacer=base.pacer,
            stats=base.stats,
            hold=self._hold(part) if part.code is not None else None,
        )

    def _hold(self, part: Participant) -> Callable[[], str | None]:
        code = part.code
        assert code is not None  # noqa: S101 - only participants with a code are held

        def hold() -> str | None:
            if not part.enabled:
                return f"participant {code} is disabled in the registry"
            if self.pauses.is_paused(code):
                return f"participant {code} is paused (refunds participant resume {code})"
            return None

        return hold

    def for_participant(self, code: str | None) -> MceClient:
        """The client of participant ``code``; None means the deployment's default one."""
        if code is None:
            code = self.registry.default
        client = self.clients.get(code)
        if client is None and code is None and len(self.clients) == 1:
            client = next(iter(self.clients.values()))
        if client is None:
            return self._unknown(code)
        return client

    def _unknown(self, code: str | None) -> MceClient:
        """A client that sends nothing: the record names a participant this registry lacks
        (its work waits, loudly, until the registry has it again)."""
        name = "no participant" if code is None else f"participant {code}"
        reason = f"{name} is not in the registry (REFUNDS_REGISTRY_FILE)"

        def hold() -> str:
            log.error("provider call held: %s", reason, extra={"participant": code})
            return reason

        return MceClient(self.settings, hold=hold)
