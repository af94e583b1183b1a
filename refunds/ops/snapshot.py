"""What ``refunds stats`` shows: one snapshot of the pipeline's health, gathered cheaply.

An operator asks three questions at 3 a.m.: where do the refunds stand (counts by state), is
anything stuck (the oldest refund that is not final, and how far the timers are behind), and is the
provider unhappy (error codes in the last hour, calls by outcome, token fetches, refused
credentials), and is a refund in flight older than the age alert (``REFUNDS_AGE_ALERT_AFTER``, well
before give-up). Everything here
reads counters and indexes the pipeline already keeps; nothing scans the records.

The oldest non-final refund of each state is found from the per-state sets and the creation
scores in ``rp:all`` (SSCAN plus pipelined ZSCOREs), so that cost grows with the refunds not final,
never with the ones already final; it is ``refunds stats``'s alone. The oldest refund in flight
(what ``/metrics`` serves on every scrape) is the first member of the in-flight index
(``refunds.store.inflight``): one ZRANGE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from refunds.models import FINAL_STATES, State, iso, now
from refunds.ops.counters import Stats
from refunds.store.archive_queue import ArchiveQueue, Lag
from refunds.store.inflight import IN_FLIGHT_STATES, InFlight
from refunds.store.ledger import Ledger
from refunds.store.outbox import Outbox
from refunds.store.pacing import credentials_refused_since

NON_FINAL_STATES = tuple(s for s in State if s not in FINAL_STATES)
# Refunds the pipeline is moving on its own (IN_FLIGHT_STATES): the age alert watches these.
AGE_ALERT_AFTER = 3600.0  # REFUNDS_AGE_ALERT_AFTER's default
ERROR_WINDOW_SECONDS = 3600.0
_SCAN_CHUNK = 1000


#: Seconds the oldest queued archive change may wait before stats and the health probe warn.
ARCHIVE_LAG_WARN = 300.0

@dataclass(frozen=True)
class Oldest:
    """One refund that is not final: its reference, state and creation time."""

    client_reference: str
    state: str
    created_at: float

    def age(self, at: float) -> float:
        return max(0.0, at - self.created_at)


@dataclass(frozen=True)
class OpsStats:
    """A snapshot of the pipeline, as ``refunds stats`` prints it."""

    at: float
    counts: dict[str, int]
    oldest: Oldest | None
    oldest_by_state: dict[str, Oldest]
    timer_count: int
    timer_lag: float
    since_last_tick: float | None  # seconds since the scheduler tick last ran (None: never)
    errors: dict[str, int]  # provider error code -> count, last ``error_window`` seconds
    error_window: float
    calls: dict[str, dict[str, int]]  # operation -> outcome -> count (since the counters began)
    token_fetches: int
    conflicts: int = 0  # refunds marked with a provider conflict (refunds list --conflicts)
    conflict_kinds: dict[str, int] = field(default_factory=dict)  # kind -> times seen
    notifications_pending: int = 0  # outcome notifications in the outbox
    notifications_dead: int = 0  # given up on, not replayed (refunds notifications dead)
    in_flight_oldest: Oldest | None = None  # the oldest refund the pipeline is still moving
    age_alert_after: float = AGE_ALERT_AFTER  # seconds (REFUNDS_AGE_ALERT_AFTER)
    credentials_refused_since: float | None = None  # the token endpoint refuses us since then
    # changes queued for the SQL archive, and the oldest one's age
    archive_lag: Lag = field(default_factory=lambda: Lag(0, 0.0))
    archived_out: int = 0  # final refunds that left Redis for the archive (hot retention)

    @property
    def age_alert(self) -> bool:
        """A refund in flight is older than ``age_alert_after``: something holds it (an outage,
        a stuck worker) well before give-up (``REFUNDS_GIVE_UP_AFTER``) sends it to a human."""
        o = self.in_flight_oldest
        return o is not None and o.age(self.at) > self.age_alert_after

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def non_final(self) -> int:
        return sum(n for s, n in self.counts.items() if State(s) not in FINAL_STATES)

    def to_public(self) -> dict[str, Any]:
        """The ``--json`` shape (camelCase like the rest of the CLI's JSON; keys are stable)."""

        def oldest(o: Oldest | None) -> dict[str, Any] | None:
            if o is None:
                return None
            return {
                "clientReference": o.client_reference,
                "state": o.state,
                "createdAt": iso(o.created_at),
                "ageSeconds": round(o.age(self.at), 3),
            }

        return {
            "at": iso(self.at),
            "counts": dict(self.counts),
            "total": self.total,
            "nonFinal": self.non_final,
            "oldestNonFinal": oldest(self.oldest),
            "oldestByState": {s: oldest(o) for s, o in self.oldest_by_state.items()},
            "timers": {
                "count": self.timer_count,
                "lagSeconds": round(self.timer_lag, 3),
                "lastTickSecondsAgo": None
                if self.since_last_tick is None
                else round(self.since_last_tick, 3),
            },
            "errors": {"windowSeconds": self.error_window, "codes": dict(self.errors)},
            "providerCalls": {op: dict(outcomes) for op, outcomes in self.calls.items()},
            "tokenFetches": self.token_fetches,
            "conflicts": {"count": self.conflicts, "kinds": dict(self.conflict_kinds)},
            "notifications": {
                "pending": self.notifications_pending,
                "dead": self.notifications_dead,
            },
            "ageAlert": {
                "alert": self.age_alert,
                "afterSeconds": self.age_alert_after,
                "oldestInFlight": oldest(self.in_flight_oldest),
            },
            "archive": {**self.archive_lag.to_public(), "leftRedis": self.archived_out},
            "credentialsRefusedSince": None
            if self.credentials_refused_since is None
            else iso(self.credentials_refused_since),
        }


def oldest_by_state(
    ledger: Ledger, states: tuple[State, ...] = NON_FINAL_STATES
) -> dict[str, Oldest]:
    """The oldest refund of each given state that has any: SSCAN the state's set, ZSCORE each
    member in ``rp:all`` (pipelined, a chunk at a time, so memory stays bounded)."""
    found: dict[str, Oldest] = {}
    for state in states:
        oldest = ledger.oldest_in_state(state, _SCAN_CHUNK)
        if oldest is not None:
            found[str(state)] = Oldest(oldest[0], str(state), oldest[1])
    return found


def oldest_in_flight_age(ledger: Ledger) -> float:
    """Seconds since intake of the oldest refund in ``IN_FLIGHT_STATES`` (0.0 when none), from
    the in-flight index: one ZRANGE, whatever the number in flight."""
    found = InFlight(ledger.redis).oldest()
    return 0.0 if found is None else max(0.0, now() - found[1])


def _oldest(candidates: list[Oldest]) -> Oldest | None:
    return min(candidates, key=lambda o: (o.created_at, o.client_reference), default=None)


def gather(
    ledger: Ledger,
    stats: Stats | None = None,
    *,
    error_window: float = ERROR_WINDOW_SECONDS,
    age_alert_after: float = AGE_ALERT_AFTER,
) -> OpsStats:
    """One snapshot: a handful of round trips plus one chunked pass over the refunds in flight."""
    stats = stats or Stats.of(ledger)
    by_state = oldest_by_state(ledger)
    oldest = _oldest(list(by_state.values()))
    in_flight = _oldest([o for s, o in by_state.items() if State(s) in IN_FLIGHT_STATES])
    calls: dict[str, dict[str, int]] = {}
    for (operation, outcome), n in sorted(stats.calls().items()):
        calls.setdefault(operation, {})[outcome] = n
    errors = dict(sorted(stats.errors_since(error_window).items(), key=lambda kv: (-kv[1], kv[0])))
    return OpsStats(
        at=now(),
        counts=ledger.counts(),
        oldest=oldest,
        oldest_by_state=by_state,
        timer_count=ledger.timer_count(),
        timer_lag=ledger.timer_lag(),
        since_last_tick=ledger.since_last_tick(),
        errors=errors,
        error_window=error_window,
        calls=calls,
        token_fetches=stats.token_fetches(),
        conflicts=ledger.conflict_count(),
        conflict_kinds=stats.conflicts(),
        notifications_pending=ledger.outbox_count(),
        notifications_dead=Outbox.of(ledger).dead_count(),
        in_flight_oldest=in_flight,
        age_alert_after=age_alert_after,
        credentials_refused_since=credentials_refused_since(ledger.redis),
        archive_lag=ArchiveQueue(ledger.redis).lag(),
        archived_out=ArchiveQueue(ledger.redis).archived_references(),
    )
