"""The ledger: the one object callers hold for a Redis database of refunds.

It composes the store's parts, each in a module of its own so each stays readable in one sitting,
and offers their methods on one object (:class:`Delegated` attributes), so callers keep
``ledger.get``, ``ledger.write``, ``ledger.claim_dispatch`` and so on:

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

from collections.abc import Callable
from typing import Concatenate, Generic, ParamSpec, TypeVar, overload

import redis

from config.settings import Settings
from refunds.store.connection import client_from_url, ensure_durable
from refunds.store.intake import ARCHIVED, ArchivedLookup, Intake, SubmitResult
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
from refunds.store.workers import WorkerRegistry

__all__ = [
    "ALL",
    "ARCHIVED",
    "CONFLICTS",
    "OUTBOX",
    "TIMERS",
    "ArchivedLookup",
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


Part = TypeVar("Part")
P = ParamSpec("P")
R = TypeVar("R")


class Delegated(Generic[Part, P, R]):
    """A ledger method that is one of its parts' methods (``part``: the attribute holding it).

    On a ledger it answers the part's bound method, so callers keep calling ``ledger.get(...)``
    with the part's own signature and docstring; on the class it answers the part's function
    (``Ledger.submit`` is ``Intake.submit``), so introspection finds where the code lives.
    """

    def __init__(self, part: str, method: Callable[Concatenate[Part, P], R]) -> None:
        self.part = part
        self.method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, ledger: None, owner: type) -> Callable[Concatenate[Part, P], R]: ...
    @overload
    def __get__(self, ledger: object, owner: type) -> Callable[P, R]: ...
    def __get__(self, ledger: object | None, owner: type) -> Callable[..., R]:
        if ledger is None:
            return self.method
        bound: Callable[P, R] = getattr(getattr(ledger, self.part), self.method.__name__)
        return bound


class Ledger:
    """The refund records, their intake, listings, timers and step leases, in one Redis database."""

    def __init__(self, client: redis.Redis, archived: ArchivedLookup | None = None) -> None:
        self.redis = client
        self.records = Records(client)
        #: ``archived``: intake's look-up of references that left Redis for the SQL archive (a
        #: tombstone hit, ``refunds.archive.reads``); None: this process has none.
        self.intake = Intake(client, self.records, archived)
        self.queries = Queries(client)
        self.timers = Timers(client)
        self.locks = StepLocks(client)
        self.workers = WorkerRegistry(client)

    # --- records (refunds.store.records) ---------------------------------------------------------
    find = Delegated("records", Records.find)
    get = Delegated("records", Records.get)
    get_many = Delegated("records", Records.get_many)
    states_of = Delegated("records", Records.states_of)
    write = Delegated("records", Records.write)
    transition = Delegated("records", Records.transition)
    transition_dispatch = Delegated("records", Records.transition_dispatch)
    flag_conflict = Delegated("records", Records.flag_conflict)
    unflag_conflict = Delegated("records", Records.unflag_conflict)

    # --- intake (refunds.store.intake) -----------------------------------------------------------
    submit = Delegated("intake", Intake.submit)
    submit_many = Delegated("intake", Intake.submit_many)

    # --- queries (refunds.store.queries) ---------------------------------------------------------
    references = Delegated("queries", Queries.references)
    iter_references = Delegated("queries", Queries.iter_references)
    reference_of_refund_id = Delegated("queries", Queries.reference_of_refund_id)
    counts = Delegated("queries", Queries.counts)
    record_count = Delegated("queries", Queries.record_count)
    conflicted = Delegated("queries", Queries.conflicted)
    conflict_count = Delegated("queries", Queries.conflict_count)
    oldest_in_state = Delegated("queries", Queries.oldest_in_state)

    # --- timers (refunds.store.timers) -----------------------------------------------------------
    claim_due = Delegated("timers", Timers.claim_due)
    claim_due_states = Delegated("timers", Timers.claim_due_states)
    claim_dispatch = Delegated("timers", Timers.claim_dispatch)
    claim_outbox = Delegated("timers", Timers.claim_outbox)
    set_due = Delegated("timers", Timers.set_due)
    set_due_in = Delegated("timers", Timers.set_due_in)
    due_soon = Delegated("timers", Timers.due_soon)
    clear_timer = Delegated("timers", Timers.clear_timer)
    timed = Delegated("timers", Timers.timed)
    due_at = Delegated("timers", Timers.due_at)
    due_count = Delegated("timers", Timers.due_count)
    timer_lag = Delegated("timers", Timers.timer_lag)
    beat_heartbeat = Delegated("timers", Timers.beat_heartbeat)
    since_last_tick = Delegated("timers", Timers.since_last_tick)
    timer_count = Delegated("timers", Timers.timer_count)
    outbox_count = Delegated("timers", Timers.outbox_count)

    # --- locks (refunds.store.locks) -------------------------------------------------------------
    lock = Delegated("locks", StepLocks.lock)
    try_lock = Delegated("locks", StepLocks.try_lock)
    beat = Delegated("locks", StepLocks.beat)
    unlock = Delegated("locks", StepLocks.unlock)

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(client_from_url(url))

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
