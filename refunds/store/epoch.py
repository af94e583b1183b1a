"""The ledger's epoch: proof that the Redis a process talks to still holds the ledger it knew.

A Redis that restarts empty (no AOF and no RDB, a lost volume, ``FLUSHALL``, a failover to a replica
that never had the data) answers every command as if nothing happened: records are simply "not
found", webhooks look early, health is green. So the first process to use a new database writes an
epoch (``rp:epoch``: a random id, Redis's time, who made it), and every process (web, CLI,
workers, beat, the health probe) reads it on start and then at most once per ``interval``: one
pipelined round trip of two GETs, no script.

A process that knew an epoch and finds it gone, or replaced by one that no operator wrote,
records the loss (``rp:epoch:lost``, written once: the first detector's account is kept) and
reports it; every process that reads the marker, a fresh one included, reports it too: health is
red, intake answers 503, the CLI exits 75, each process logs ERROR once. Nothing clears it but an
operator: ``refunds redis ack-reset --reason ...`` (:func:`acknowledge`) writes a new epoch that
carries the reason and the operator, and removes the marker; processes adopt an acknowledged
epoch at their next check.

A wipe that no running process saw (every process restarted with the empty Redis) cannot be told
from a first start by Redis alone: the runbook says to check the epoch's creation time then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import cast

import redis

from refunds.errors import LedgerResetError, NoResetToAcknowledgeError
from refunds.store.keys import EPOCH, EPOCH_LOST, HEALTH_PROBE

log = logging.getLogger("refunds.store.epoch")

#: Seconds between two reads of the epoch in one process (a web request or a tick in between
#: uses the last answer): a wipe is noticed within this, for two GETs per process per interval.
CHECK_INTERVAL = 1.0

ORIGIN_START = "start"  # written by the first process to use an empty database
ORIGIN_ACK = "ack"  # written by an operator who acknowledged a reset


@dataclass(frozen=True)
class Epoch:
    """What ``rp:epoch`` holds."""

    id: str
    created: float
    origin: str
    by: str
    reason: str = ""
    replaces: str = ""

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, text: str | bytes) -> Epoch:
        data = json.loads(text)
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Reset:
    """What ``rp:epoch:lost`` holds: the epoch a process knew, what it found, when, who saw it."""

    previous: str
    found: str
    detected: float
    by: str

    def dump(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def load(cls, text: str | bytes) -> Reset:
        data = json.loads(text)
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        found = "no epoch" if not self.found else f"epoch {self.found}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.detected))
        return (
            f"Redis lost the ledger: epoch {self.previous} was replaced by {found} "
            f"(seen by {self.by} at {stamp}); intake is refused until an operator runs "
            "`refunds redis ack-reset --reason ...` (docs/operator-runbook.md)"
        )


def _redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def read(client: redis.Redis) -> tuple[Epoch | None, Reset | None]:
    """The current epoch and loss marker, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.get(EPOCH)
    pipe.get(EPOCH_LOST)
    epoch_text, lost_text = pipe.execute()
    epoch = Epoch.load(epoch_text) if epoch_text else None
    lost = Reset.load(lost_text) if lost_text else None
    return epoch, lost


def acknowledge(client: redis.Redis, *, reason: str, by: str) -> Epoch:
    """The operator's acknowledgement of a lost ledger: a new epoch carrying ``reason`` and
    ``by``, the marker removed, in one transaction. Raises NoResetToAcknowledgeError when no
    reset is recorded (an intact epoch is never replaced)."""
    epoch, lost = read(client)
    if lost is None:
        current = "none yet" if epoch is None else epoch.id
        raise NoResetToAcknowledgeError(current)
    new = Epoch(
        id=uuid.uuid4().hex,
        created=_redis_now(client),
        origin=ORIGIN_ACK,
        by=by,
        reason=reason,
        replaces=lost.previous,
    )
    pipe = client.pipeline(transaction=True)
    pipe.set(EPOCH, new.dump())
    pipe.delete(EPOCH_LOST)
    pipe.execute()
    log.warning(
        "ledger reset acknowledged by %s: new epoch %s replaces %s (%s)",
        by,
        new.id,
        lost.previous,
        reason,
        extra={"operation": "ack-reset", "actor": by},
    )
    return new


def write_probe(client: redis.Redis) -> None:
    """One tiny write (raises what a write would: OutOfMemoryError under ``noeviction`` at
    ``maxmemory``, ReadOnlyError on a replica), for health probes: PING answers in both cases."""
    client.set(HEALTH_PROBE, "1")


class EpochWatch:
    """One process's knowledge of the epoch of one Redis database (:func:`watch`)."""

    def __init__(
        self,
        client: redis.Redis,
        process: str,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        quiet: bool = False,
    ) -> None:
        self.client = client
        self.process = process
        self.quiet = quiet  # the caller reports a reset itself (the CLI's one line)
        self.interval = interval
        self.clock = clock
        self.known: str | None = None
        self.reset: Reset | None = None
        self._checked_at: float | None = None
        self._logged = False
        self._lock = threading.Lock()

    def check(self, *, force: bool = False) -> Reset | None:
        """The recorded reset, or None while the ledger is intact; reads Redis at most once per
        ``interval`` unless ``force``. Raises redis.RedisError when Redis cannot answer."""
        now = self.clock()
        with self._lock:
            fresh = self._checked_at is not None and now - self._checked_at < self.interval
            if fresh and not force:
                return self.reset
            # Claimed before the read, which is not made under the lock: requests arriving while
            # it waits on a frozen Redis use the last answer and meet Redis's bound on their own
            # calls, instead of queueing here one socket timeout after another.
            self._checked_at = now
        current, lost = read(self.client)
        with self._lock:
            self._observe(current, lost)
            return self.reset

    def require_intact(self) -> None:
        """Raise LedgerResetError while a reset is recorded (intake calls this first)."""
        found = self.check()
        if found is not None:
            raise LedgerResetError(found.describe())

    def _observe(self, epoch: Epoch | None, lost: Reset | None) -> None:
        if lost is None and epoch is not None and self._adoptable(epoch):
            self._intact(epoch)
            return
        if lost is None and epoch is None and self.known is None:
            self._intact(self._create())
            return
        if lost is None:
            lost = self._record_loss(epoch)
        self.reset = lost
        if not self._logged and not self.quiet:
            self._logged = True
            log.error("%s (%s)", lost.describe(), self.process, extra={"operation": "epoch"})

    def _adoptable(self, epoch: Epoch) -> bool:
        """The epoch this process knows, its first one, or one an operator wrote."""
        return self.known is None or epoch.id == self.known or epoch.origin == ORIGIN_ACK

    def _intact(self, epoch: Epoch) -> None:
        if self.reset is not None and epoch.origin == ORIGIN_ACK:
            log.warning(
                "ledger reset acknowledged (epoch %s, by %s); %s resumes",
                epoch.id,
                epoch.by,
                self.process,
                extra={"operation": "epoch"},
            )
        self.known = epoch.id
        self.reset = None
        self._logged = False

    def _create(self) -> Epoch:
        """The first process on an empty database writes the epoch (SET NX: one wins)."""
        mine = Epoch(
            id=uuid.uuid4().hex,
            created=_redis_now(self.client),
            origin=ORIGIN_START,
            by=self.process,
        )
        if self.client.set(EPOCH, mine.dump(), nx=True):
            log.info("new ledger epoch %s (%s)", mine.id, self.process)
            return mine
        text = self.client.get(EPOCH)
        return Epoch.load(text) if text else mine

    def _record_loss(self, found: Epoch | None) -> Reset:
        """Write the loss marker once (SET NX); the first detector's account is the one kept."""
        mine = Reset(
            previous=self.known or "",
            found=found.id if found is not None else "",
            detected=_redis_now(self.client),
            by=self.process,
        )
        if self.client.set(EPOCH_LOST, mine.dump(), nx=True):
            return mine
        text = self.client.get(EPOCH_LOST)
        return Reset.load(text) if text else mine


_watches: weakref.WeakKeyDictionary[redis.Redis, EpochWatch] = weakref.WeakKeyDictionary()
_watches_lock = threading.Lock()


def watch(client: redis.Redis, process: str, *, quiet: bool = False) -> EpochWatch:
    """The watch of ``client`` (one per client object, so the web app's health route, its intake
    and its producer, which share the Context's client, share what they know; a forked child
    builds clients of its own, and with them watches of its own). ``quiet`` (no ERROR log line)
    applies when the watch is made: the CLI, which says it in its own line, makes its first."""
    with _watches_lock:
        found = _watches.get(client)
        if found is None:
            # The watch reaches its client through a weak proxy: the registry must not keep a
            # client (and its sockets) alive after its owner dropped it.
            proxy = cast(redis.Redis, weakref.proxy(client))
            found = _watches[client] = EpochWatch(proxy, process, quiet=quiet)
        return found
