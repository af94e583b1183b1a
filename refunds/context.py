"""The process-wide context: one Redis pool, one token cache, one HTTP session, one Settings.

Built lazily on first use in each process (after a prefork worker forks), from the one Settings.
Every store (ledger and timers, outbox, webhook events, token cache, counters, pacing) shares the
ledger's Redis connection pool; only ``refunds.store`` knows their keys.
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
from dataclasses import dataclass, field
from functools import cached_property

from config.settings import Settings, get_settings
from refunds.archive.reads import Refunds, archived_lookup, refunds_of
from refunds.kyt.intake import KytIntake
from refunds.mce.auth import TokenCache
from refunds.mce.client import MceClient
from refunds.models import RefundRecord
from refunds.ops.counters import Stats
from refunds.participants.clients import ParticipantClients
from refunds.participants.registry import registry_of
from refunds.policy import Policy
from refunds.store.connection import redis_client
from refunds.store.events import EventStore
from refunds.store.ledger import Ledger
from refunds.store.outbox import Outbox
from refunds.store.pacing import Pacer
from refunds.store.tokens import TokenStore


@dataclass
class Context:
    """What a step needs: settings and their policy, ledger, provider client and counters (one
    set per process)."""

    settings: Settings
    ledger: Ledger
    client: MceClient
    stats: Stats
    rng: random.Random = field(default_factory=random.Random)
    # The clients per participant (a registry file, or MCE_PARTICIPANT_CODE); None: ``client``
    # serves every refund (a Context built by hand).
    participants: ParticipantClients | None = None
    _policy: tuple[Settings, Policy] | None = field(default=None, init=False, repr=False)

    @property
    def policy(self) -> Policy:
        """The domain rules of these settings (``refunds.policy``), built once per Settings:
        the decisions take it as it is, nothing after them reads the settings' raw values
        again. Rebuilt only when ``settings`` is replaced (tests swap a Context's settings)."""
        if self._policy is None or self._policy[0] is not self.settings:
            policy = Policy.from_settings(self.settings)
            if self.participants is not None:
                participants = self.participants.registry.participants.values()
                own = {
                    part.code: part.approval_thresholds
                    for part in participants
                    if part.code is not None and part.approval_thresholds is not None
                }
                policy = dataclasses.replace(policy, participant_thresholds=own)
            self._policy = (self.settings, policy)
        return self._policy[1]

    def client_for(self, record: RefundRecord) -> MceClient:
        """The client of the refund's participant: its credential, its participantCode."""
        if self.participants is None:
            return self.client
        return self.participants.for_participant(record.participant)

    # Derived from the ledger (built on first use), so a Context built by hand has them too.
    @cached_property
    def events(self) -> EventStore:
        """The webhook event store (raw events, parked set)."""
        return EventStore.of(self.ledger)

    @cached_property
    def outbox(self) -> Outbox:
        """The outbox of outcome notifications."""
        return Outbox.of(self.ledger)

    @cached_property
    def refunds(self) -> Refunds:
        """Reads from Redis or the SQL archive, whichever holds the record."""
        return refunds_of(self.ledger, self.settings)

    @cached_property
    def kyt(self) -> KytIntake:
        """The KYT intake (detector readings, the rules file validated: ConfigError if bad)."""
        return KytIntake(self.settings, self.ledger)

    def jitter(self, ceiling: float) -> float:
        """Full jitter, in its own method so tests can pin it."""
        return self.rng.uniform(0, ceiling)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): capped exponential with full jitter."""
        ceiling = min(
            self.settings.retry_max_seconds,
            self.settings.retry_base_seconds * (2 ** max(0, attempt - 1)),
        )
        return max(0.05, self.jitter(ceiling))

    @property
    def lock_seconds(self) -> float:
        # Outlives the hard task time limit, so a lock never expires under a running step.
        return self.settings.task_time_limit + 5


_lock = threading.Lock()
_current: tuple[int, Context] | None = None


def build_context(settings: Settings) -> Context:
    """The process's Context. Without a registry file and without ``MCE_PARTICIPANT_CODE``, one
    client serves every refund, as before registries; otherwise one client per participant
    (``refunds.participants``), and ``client`` is the default participant's."""
    ledger = Ledger(redis_client(settings), archived=archived_lookup(settings))
    stats = Stats.of(ledger)
    registry = registry_of(settings)  # a bad registry file: ConfigError, before any refund
    if registry.from_file or settings.mce_participant_code:
        clients = ParticipantClients(settings, ledger, stats, registry)
        client = clients.for_participant(None)
        return Context(
            settings=settings, ledger=ledger, client=client, stats=stats, participants=clients
        )
    client = MceClient(
        settings,
        pacer=Pacer.of(ledger, settings.mce_max_rps, settings.pacing_max_wait),
        stats=stats,
    )
    client.tokens = TokenCache(TokenStore.of(ledger), settings, client.fetch_token)
    return Context(settings=settings, ledger=ledger, client=client, stats=stats)


def current_context() -> Context:
    """This process's Context, rebuilt in a forked child (the parent's sockets are not its own)."""
    global _current  # noqa: PLW0603 - one per process by design
    with _lock:
        if _current is None or _current[0] != os.getpid():
            _current = (os.getpid(), build_context(get_settings()))
        return _current[1]
