"""The archive's tables (SQLAlchemy 2 declarative models), the record that outlives Redis.

Four tables, each filled by the archiver from the Redis queue (``refunds.archive.archiver``):

- ``refund_events``: one row per history line (every transition), append-only. Unique on
  ``(reference, version)``: each line is one version of its record, so a re-drained entry is a
  no-op. Rows are never updated or deleted: the ORM refuses (below), and the migration adds
  triggers that make the database refuse too (PostgreSQL and SQLite).
- ``refunds``: the latest archived snapshot of each record (every hash field, as JSON), upserted
  only by a higher version; columns for the filters reads need (state, times, currency, amount).
- ``webhooks``: every stored MCE webhook, by ``notificationId``: raw body, its sha256, the
  verification outcome (only verified bodies are stored: others are refused with 400/401 before
  storage) and how its processing ended.
- ``notification_outcomes``: every outcome of an outcome notification (delivered, failed attempt,
  given up), keyed by its queue entry id.

Changes here need a migration (``alembic/versions``); ``alembic check`` in the tests proves they
agree.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

__all__ = ["ArchivedRefund", "Base", "NotificationOutcome", "RefundEvent", "StoredWebhook"]

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}

# Autoincrementing ids: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
_ID = BigInteger().with_variant(Integer(), "sqlite")
_TS = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class RefundEvent(Base):
    """One history line of one refund: who moved it from what to what, when and why."""

    __tablename__ = "refund_events"
    __table_args__ = (UniqueConstraint("reference", "version"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    reference: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(_TS, index=True)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    #: the Redis queue entry it came from (``{ms}-{seq}``): when Redis queued it
    queue_id: Mapped[str] = mapped_column(String(32))


class ArchivedRefund(Base):
    """The latest archived version of one refund record."""

    __tablename__ = "refunds"
    __table_args__ = (Index("ix_refunds_state_created", "state", "created_at"),)

    reference: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(_TS, index=True)
    updated_at: Mapped[datetime] = mapped_column(_TS)
    #: when it turned final (the first history line into a final state); None while in flight
    final_at: Mapped[datetime | None] = mapped_column(_TS, index=True)
    currency: Mapped[str | None] = mapped_column(String(16), index=True)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(38, 18))
    fingerprint: Mapped[str] = mapped_column(String(64))
    #: every field of the Redis hash (``refunds.store.codec.FIELDS`` names), as JSON text
    record: Mapped[str] = mapped_column(Text)
    #: when its keys left Redis (hot retention); None while Redis holds it
    evicted_at: Mapped[datetime | None] = mapped_column(_TS)


class StoredWebhook(Base):
    """One MCE webhook as received (raw body) and how its processing ended."""

    __tablename__ = "webhooks"

    notification_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    body_sha256: Mapped[str] = mapped_column(String(64))
    verification: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(_TS)
    status: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(64), index=True)
    error: Mapped[str | None] = mapped_column(Text)


class NotificationOutcome(Base):
    """One outcome of an outcome notification (``task:{ref}`` / ``http:{ref}``)."""

    __tablename__ = "notification_outcomes"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    queue_id: Mapped[str] = mapped_column(String(32), unique=True)
    channel: Mapped[str] = mapped_column(String(8))
    reference: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(_TS)


class AppendOnlyError(RuntimeError):
    """An attempt to change or remove an archived history line."""


def _refuse(mapper: Mapper[Any], connection: Any, target: RefundEvent) -> None:
    raise AppendOnlyError(
        f"refund_events is append-only: refusing to change {target.reference} v{target.version}"
    )


event.listen(RefundEvent, "before_update", _refuse)
event.listen(RefundEvent, "before_delete", _refuse)
