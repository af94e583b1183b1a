"""The SQL archive (``refunds.archive``): where the record that outlives Redis lives, and how long
a final refund stays hot in Redis before it is read from the archive alone."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from config.settings.common import parse_duration


class ArchiveSettings(BaseModel):
    """The archive's database, hot retention and the archiver's pace."""

    database_url: str = Field(
        "sqlite:///refunds-archive.db",
        validation_alias="REFUNDS_DATABASE_URL",
        description="SQLAlchemy URL of the SQL archive: PostgreSQL in production "
        "(postgresql+psycopg://user:password@host:5432/db), an SQLite file by default "
        "(relative to the working directory); run `refunds db upgrade` once per release",
    )
    hot_retention: float = Field(
        7 * 24 * 3600.0,
        ge=0,
        validation_alias="REFUNDS_HOT_RETENTION",
        description="how long a final refund stays in Redis after it turned final, once "
        "archived (seconds, or a duration such as 7d); reads then answer from the archive",
    )
    archive_batch: int = Field(
        500,
        ge=1,
        le=10_000,
        validation_alias="REFUNDS_ARCHIVE_BATCH",
        description="queue entries the archiver writes per SQL transaction",
    )
    archive_interval: float = Field(
        1.0,
        gt=0,
        le=3600,
        validation_alias="REFUNDS_ARCHIVE_INTERVAL",
        description="seconds between beat's archive.drain runs",
    )

    @field_validator("hot_retention", mode="before")
    @classmethod
    def _parse_retention(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value
