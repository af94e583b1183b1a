"""The webhook event store: raw MCE events by ``notificationId`` and the parked set per refund.

The Redis part of ``refunds.webhooks`` (keys ``rp:wh:{notificationId}``, ``rp:wh:parked:{ref}``
in ``refunds.store.keys``; both kept ``EVENT_TTL``). Parking checks the refund's record version
in the same script (``lua/event_park.lua``), so no event is parked after the last replay. Storing
a delivery is ONE script (``lua/event_store.lua``): the body (first delivery wins), its hash,
status ``received``, the time and the expiry are written together, and the same script tells a
new delivery from a retry, a duplicate or a conflicting body. It used to be HSETNX, HSETs and
EXPIRE apart, so a crash between them left an event with a body but no status that every
redelivery answered "duplicate" and that never applied; an event found in that state (written by
the old code) is taken as new.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Literal, cast

import redis

from refunds.store.keys import ARCHIVE_QUEUE, event_key, parked_key, record_key
from refunds.store.scripts import Script

if TYPE_CHECKING:
    from refunds.store.ledger import Ledger

EVENT_TTL = 30 * 24 * 3600  # seconds raw events are kept, for replays and audits

CLAIM_SECONDS = 60.0  # a delivery "received" longer than this was abandoned: a repeat takes it


StoreOutcome = Literal["new", "retry", "duplicate", "conflict"]


class EventStore:
    """Raw webhook events and the events parked until their refund exists."""

    def __init__(self, client: redis.Redis, ttl: int = EVENT_TTL) -> None:
        self.redis = client
        self.ttl = ttl
        self._store = Script(client, "event_store")
        self._park = Script(client, "event_park")

    @classmethod
    def of(cls, ledger: Ledger) -> EventStore:
        """The event store in the ledger's database."""
        return cls(ledger.redis)

    def store(
        self, nid: str, body: bytes, at: float, claim_seconds: float = CLAIM_SECONDS
    ) -> StoreOutcome:
        """Store and claim one delivery of the raw ``body`` atomically (``lua/event_store.lua``):
        "new" or "retry" (apply it), "duplicate" or "conflict" (change nothing)."""
        text = body.decode("utf-8", errors="replace")
        digest = hashlib.sha256(body).hexdigest()
        args: list[str | float] = [text, digest, repr(at), self.ttl, claim_seconds, nid]
        keys = [event_key(nid), ARCHIVE_QUEUE]  # a new event is queued for the SQL archive
        return cast(StoreOutcome, str(self._store(keys=keys, args=args)))

    def mark(self, nid: str, status: str, ref: str | None = None) -> None:
        """Record how the event ended (applied, stale, parked, ignored) and its reference."""
        mapping: dict[str | bytes, str] = {"status": status}
        if ref:
            mapping["ref"] = ref
        self._mark(nid, mapping)

    def _mark(self, nid: str, mapping: dict[str | bytes, str]) -> None:
        """Write the event's outcome and queue it for the archive in one MULTI (both or none)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(event_key(nid), mapping=mapping)  # type: ignore[arg-type]
        pipe.xadd(ARCHIVE_QUEUE, {"k": "s", "nid": nid, **mapping})  # type: ignore[dict-item]
        pipe.execute()

    def mark_error(self, nid: str, error: str) -> None:
        """The apply failed: a redelivery finishes the job (status ``error`` is unfinished)."""
        self._mark(nid, {"status": "error", "error": error})

    def get(self, nid: str) -> dict[str, str]:
        """The stored event's fields (body, status, received_at, error, ref); {} when unknown."""
        return cast(dict[str, str], self.redis.hgetall(event_key(nid)))

    def ttl_of(self, nid: str) -> int:
        """Seconds the stored event has left (-1 no expiry, -2 not stored)."""
        return int(self.redis.ttl(event_key(nid)))

    def park(self, nid: str, ref: str, at: float, version: int | None) -> bool:
        """Keep ``nid`` until ``ref`` can take it (replayed after every step and operator action).

        ``version`` is the record version the caller read (None: it found no record). Answers
        False, parking nothing, when the record changed since (or appeared): the caller must read
        it again and apply, because the replay that follows that change may already have run.
        """
        args: list[str | float] = [nid, repr(at), self.ttl, "" if version is None else str(version)]
        return bool(self._park(keys=[parked_key(ref), record_key(ref)], args=args))

    def parked(self, ref: str) -> list[str]:
        """The notificationIds parked for ``ref``, oldest first."""
        return [str(i) for i in cast(list[str], self.redis.zrange(parked_key(ref), 0, -1))]

    def has_parked(self, ref: str) -> bool:
        return bool(self.redis.exists(parked_key(ref)))

    def unpark(self, ref: str, nid: str) -> str | None:
        """Take ``nid`` out of ``ref``'s parked set; answers its stored body (None: expired, or
        another replay took it first: of concurrent replays exactly one applies each event)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(event_key(nid), "body")
        pipe.zrem(parked_key(ref), nid)
        body, removed = pipe.execute()
        return None if body is None or not removed else str(body)
