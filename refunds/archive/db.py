"""The archive database: engines, the Alembic migrations and the schema-revision check.

``REFUNDS_DATABASE_URL`` names it (PostgreSQL in production; an SQLite file by default). The
migrations live in this package (``alembic/``), so an installed package can upgrade its database
(``refunds db upgrade``). A process that uses the archive (worker, web, the CLI's reads) calls
:func:`require_current_schema` at start: a database behind the code's head revision stops it with
one line and exit code 2, instead of failing later on a missing column.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

from refunds.errors import RefundsError

__all__ = [
    "SCHEMA_BEHIND_EXIT",
    "SchemaBehindError",
    "alembic_config",
    "check_schema",
    "engine_for",
    "head_revision",
    "require_current_schema",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("alembic")
SCHEMA_BEHIND_EXIT = 2


class SchemaBehindError(RefundsError):
    """The archive database is not at the code's schema revision."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: the web's reads do not wait for the archiver's writes; a busy database waits 2 s
    # rather than failing at once (the archiver's next round retries either way, and a round
    # must not hold a worker of the timers queue for long).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.close()


@cache
def engine_for(url: str) -> Engine:
    """One engine (connection pool) per URL and process."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 2})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 5}
    )


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise SchemaBehindError("the archive has no migrations (a broken installation)")
    return head


def current_revision(url: str) -> str | None:
    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` (``refunds db upgrade``)."""
    command.upgrade(alembic_config(url), revision)


def check_schema(url: str) -> None:
    """Raise SchemaBehindError unless the database is at the head revision."""
    head = head_revision()
    current = current_revision(url)
    if current != head:
        raise SchemaBehindError(
            f"archive database schema is at {current or 'no revision'}, the code needs {head}: "
            "run `refunds db upgrade`"
        )


def require_current_schema(url: str) -> None:
    """At a process's start: a schema behind stops it, one line on stderr, exit code 2. An
    unreachable database is a one-line warning (the queue in Redis holds the changes meanwhile)."""
    try:
        check_schema(url)
    except SchemaBehindError as exc:
        sys.stderr.write(f"refunds: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(SCHEMA_BEHIND_EXIT) from None
    except Exception as exc:  # noqa: BLE001 - a database that is down only delays the archive
        # The hot path does not need SQL: a worker or web app starts anyway, the queue grows
        # until the archiver reaches the database again. Said, not hidden.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"refunds: warning: archive database unreachable ({first})\n")
        sys.stderr.flush()
