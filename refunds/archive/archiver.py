"""The archiver: drains the Redis archive queue into SQL, idempotently, oldest first.

Each round reads a batch of the oldest queue entries (``refunds.store.archive_queue``), writes
them in ONE database transaction and only after its commit deletes them from the queue. Every
insert is ``INSERT ... ON CONFLICT DO NOTHING`` on a natural key (an event's ``(reference,
version)``, a webhook's ``notificationId``, a notification outcome's queue id), and a snapshot is
replaced only by a higher version; so a round cut short anywhere (a SIGKILLed worker between the
commit and the delete, a database that went away) is simply done again: nothing lost, nothing
doubled. While the database is down the queue grows in Redis and nothing else waits.

One archiver at a time (the queue's lock), so entries are applied in queue order.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, Engine, func, update
from sqlalchemy.dialects import postgresql, sqlite

from refunds.archive.models import ArchivedRefund, NotificationOutcome, RefundEvent, StoredWebhook
from refunds.models import FINAL_STATES
from refunds.store.archive_queue import ArchiveQueue, Entry

__all__ = ["Batch", "DrainResult", "drain", "utc"]

log = logging.getLogger("refunds.archive")

_LEASE_FIELDS = ("lk", "lku")  # a step's lease: not part of the record


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _queued_at(entry_id: str) -> datetime:
    return utc(int(entry_id.split("-", maxsplit=1)[0]) / 1000)


def _decimal(text: str | None) -> Decimal | None:
    try:
        return Decimal(text) if text else None
    except InvalidOperation:
        return None


@dataclass
class Batch:
    """One batch of queue entries, sorted into rows per table."""

    events: list[dict[str, Any]] = field(default_factory=list)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    webhook_outcomes: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> Batch:
        batch = cls()
        for entry in entries:
            kind = entry.fields.get("k")
            if kind == "r":
                batch._record(entry)
            elif kind == "w":
                batch._webhook(entry)
            elif kind == "s":
                batch.webhook_outcomes.append(entry.fields)
            elif kind == "n":
                batch._notification(entry)
            else:
                log.error("archive: unknown queue entry kind %r (%s); skipped", kind, entry.id)
        return batch

    def _record(self, entry: Entry) -> None:
        f = entry.fields
        ref, version = f["ref"], int(f["v"])
        lines = [json.loads(line) for line in f.get("h", "").split("\n") if line]
        final_at = None
        for n, line in enumerate(lines):
            self.events.append(
                {
                    "reference": ref,
                    "version": version - len(lines) + 1 + n,
                    "at": utc(float(line["at"])),
                    "from_state": line["from"],
                    "to_state": line["to"],
                    "reason": line["reason"],
                    "actor": line.get("actor", "pipeline"),
                    "queue_id": entry.id,
                }
            )
            if final_at is None and line["to"] in FINAL_STATES:
                final_at = utc(float(line["at"]))
        rec = {k: v for k, v in json.loads(f["r"]).items() if k not in _LEASE_FIELDS}
        row = {
            "reference": ref,
            "version": version,
            "state": rec["state"],
            "created_at": utc(float(rec["created"])),
            "updated_at": utc(float(rec.get("updated") or rec["created"])),
            "final_at": final_at,
            "currency": rec.get("cur") or None,
            "amount": _decimal(rec.get("amount")),
            "fingerprint": rec["fp"],
            "record": json.dumps(rec, separators=(",", ":"), sort_keys=True),
        }
        before = self.snapshots.get(ref)
        if before is not None:
            row["final_at"] = before["final_at"] or final_at
            if before["version"] > version:
                return
        self.snapshots[ref] = row

    def _webhook(self, entry: Entry) -> None:
        f = entry.fields
        self.webhooks.append(
            {
                "notification_id": f["nid"],
                "body": f["body"],
                "body_sha256": f["hash"],
                # Only verified deliveries reach the store (others are refused with 400/401).
                "verification": "verified",
                "received_at": utc(float(f["at"])),
                "status": "received",
            }
        )

    def _notification(self, entry: Entry) -> None:
        f = entry.fields
        channel, _, ref = f["m"].partition(":")
        self.notifications.append(
            {
                "queue_id": entry.id,
                "channel": channel,
                "reference": ref,
                "outcome": f["o"],
                "attempts": int(f.get("a") or 0),
                "error": f.get("e") or None,
                "at": _queued_at(entry.id),
            }
        )


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def write(conn: Connection, batch: Batch) -> None:
    """Write one batch (inside the caller's transaction); every statement is idempotent."""
    insert = _insert(conn)
    if batch.events:
        conn.execute(
            insert(RefundEvent).on_conflict_do_nothing(index_elements=["reference", "version"]),
            batch.events,
        )
    if batch.snapshots:
        stmt = insert(ArchivedRefund)
        table = ArchivedRefund.__table__
        newer = {
            c: stmt.excluded[c]
            for c in ("version", "state", "updated_at", "currency", "amount", "record")
        }
        newer["final_at"] = func.coalesce(table.c.final_at, stmt.excluded.final_at)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["reference"],
                set_=newer,
                where=table.c.version < stmt.excluded.version,
            ),
            list(batch.snapshots.values()),
        )
    if batch.webhooks:
        conn.execute(
            insert(StoredWebhook).on_conflict_do_nothing(index_elements=["notification_id"]),
            batch.webhooks,
        )
    for outcome in batch.webhook_outcomes:
        values = {"status": outcome["status"]}
        if outcome.get("ref"):
            values["reference"] = outcome["ref"]
        if "error" in outcome:
            values["error"] = outcome["error"]
        conn.execute(
            update(StoredWebhook)
            .where(StoredWebhook.notification_id == outcome["nid"])
            .values(**values)
        )
    if batch.notifications:
        conn.execute(
            insert(NotificationOutcome).on_conflict_do_nothing(index_elements=["queue_id"]),
            batch.notifications,
        )


@dataclass(frozen=True)
class DrainResult:
    """What one drain did: entries archived, batches committed, whether it held the lock."""

    entries: int
    batches: int
    locked_out: bool = False


def drain(
    queue: ArchiveQueue,
    engine: Engine,
    *,
    batch_size: int = 500,
    budget_seconds: float = 20.0,
    lock_seconds: float = 60.0,
) -> DrainResult:
    """Archive the queue's entries, a batch per transaction, until it is empty or
    ``budget_seconds`` have passed. Database errors propagate (the entries stay queued)."""
    token = uuid.uuid4().hex
    if not queue.lock(token, lock_seconds):
        return DrainResult(0, 0, locked_out=True)
    entries = batches = 0
    deadline = time.monotonic() + budget_seconds
    try:
        while time.monotonic() < deadline:
            chunk = queue.read(batch_size)
            if not chunk:
                break
            with engine.begin() as conn:
                write(conn, Batch.of(chunk))
            # Only after the commit: a crash before this line re-archives the batch (no-op).
            queue.delete([e.id for e in chunk])
            entries += len(chunk)
            batches += 1
            if len(chunk) < batch_size:
                break
    finally:
        queue.unlock(token)
    return DrainResult(entries, batches)
