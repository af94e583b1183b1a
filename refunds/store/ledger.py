"""The ledger: the one object callers hold for a Redis database of refunds.

It composes the store's parts, each in a module of its own so each stays readable in one sitting,
and offers their methods on one object (bound in ``__init__``), so callers keep ``ledger.get``,
``ledger.write``, ``ledger.claim_dispatch`` and so on:

- ``records`` (``refunds.store.records``): one record read, or moved by an atomic
  compare-and-set write (``find``, ``get``, ``get_many``, ``states_of``, ``write``,
  ``transition``, ``transition_dispatch``, ``flag_conflict``);
- ``intake`` (``refunds.store.intake``): intents become records (``submit``, ``submit_many``);
- ``queries`` (``refunds.store.queries``): listings and counts (``references``, ``counts``,
  ``conflicted``, ``conflict_count``, ``record_count``, ``oldest_in_state``,
  ``iter_references``, ``reference_of_refund_id``);
- ``timers`` (``refunds.store.timers``): when each refund next needs a worker (claims, due
  times, lag, the tick's heartbeat);
- ``locks`` (``refunds.store.locks``): the per-refund step lease (``lock``, ``try_lock``,
  ``beat``, ``unlock``).

The keys are listed with their types and lifetimes in ``refunds.store.keys``; the scripts are
``refunds/store/lua/*.lua`` (``refunds.store.scripts``). The names re-exported here are kept for
the code that imports them from the ledger.
"""

from __future__ import annotations

import redis

from config.settings import Settings
from refunds.store.connection import ensure_durable
from refunds.store.intake import Intake, SubmitResult
from refunds.store.keys import (
    ALL,
    CONFLICTS,
    OUTBOX,
    TIMERS,
    history_key,
    legacy_history_key,
    record_key,
    state_key,
)
from refunds.store.locks import StepLock, StepLocks
from refunds.store.queries import Queries
from refunds.store.records import Edge, Records, TimerAction, Written
from refunds.store.timers import Timers

__all__ = [
    "ALL",
    "CONFLICTS",
    "OUTBOX",
    "TIMERS",
    "Edge",
    "Ledger",
    "StepLock",
    "SubmitResult",
    "TimerAction",
    "Written",
    "history_key",
    "legacy_history_key",
    "record_key",
    "state_key",
]


class Ledger:
    """The refund records, their intake, listings, timers and step leases, in one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.records = records = Records(client)
        self.intake = intake = Intake(client, records)
        self.queries = queries = Queries(client)
        self.timers = timers = Timers(client)
        self.locks = locks = StepLocks(client)
        # The parts' methods, on the ledger: callers keep one object.
        self.find = records.find
        self.get = records.get
        self.get_many = records.get_many
        self.states_of = records.states_of
        self.write = records.write
        self.transition = records.transition
        self.transition_dispatch = records.transition_dispatch
        self.flag_conflict = records.flag_conflict
        self.submit = intake.submit
        self.submit_many = intake.submit_many
        self.references = queries.references
        self.iter_references = queries.iter_references
        self.reference_of_refund_id = queries.reference_of_refund_id
        self.counts = queries.counts
        self.record_count = queries.record_count
        self.conflicted = queries.conflicted
        self.conflict_count = queries.conflict_count
        self.oldest_in_state = queries.oldest_in_state
        self.claim_due = timers.claim_due
        self.claim_due_states = timers.claim_due_states
        self.claim_dispatch = timers.claim_dispatch
        self.claim_outbox = timers.claim_outbox
        self.set_due = timers.set_due
        self.set_due_in = timers.set_due_in
        self.due_soon = timers.due_soon
        self.clear_timer = timers.clear_timer
        self.timed = timers.timed
        self.due_at = timers.due_at
        self.due_count = timers.due_count
        self.timer_lag = timers.timer_lag
        self.beat_heartbeat = timers.beat_heartbeat
        self.since_last_tick = timers.since_last_tick
        self.timer_count = timers.timer_count
        self.outbox_count = timers.outbox_count
        self.lock = locks.lock
        self.try_lock = locks.try_lock
        self.beat = locks.beat
        self.unlock = locks.unlock

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(redis.Redis.from_url(url, decode_responses=True, health_check_interval=30))

    def ping(self) -> bool:
        """Round trip to Redis; raises redis.RedisError when it is unreachable."""
        return bool(self.redis.ping())

    def ensure_durable(self, settings: Settings) -> None:
        """Wait until enough replicas have every write this ledger's client made so far, or raise.

        Call after a write that cannot be redone from the provider (intake, an operator action)
        and before answering the caller. Arguments: ``settings.min_replica_acks`` (a count of
        replicas; 0, the default, makes this a no-op) and ``settings.replica_ack_timeout_ms``
        (milliseconds to wait for them, one Redis ``WAIT``). Raises ``NotDurableError`` (fewer
        acks than required within the timeout: the caller must retry) or the ``redis`` error of a
        primary that cannot be reached. The implementation, and why it writes a probe key first,
        is ``refunds.store.connection.ensure_durable``.
        """
        ensure_durable(self.redis, settings)
