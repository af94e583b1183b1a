"""``refunds db``: the archive database's schema (``upgrade`` runs the migrations, ``check``
says whether it is current). The database is ``REFUNDS_DATABASE_URL`` (an SQLite file by
default); see ``refunds.archive``."""

from __future__ import annotations

import click

from refunds.archive.db import check_schema, head_revision, upgrade
from refunds.cli import common


@click.group()
def db() -> None:
    """The archive database (REFUNDS_DATABASE_URL)."""


@db.command("upgrade")
def upgrade_() -> None:
    """Run the archive's migrations up to the code's head revision."""
    settings = common.settings()
    upgrade(settings.database_url)
    click.echo(f"archive database at revision {head_revision()}")


@db.command("check")
def check() -> None:
    """Exit 0 when the archive database is at the code's revision, 2 (one line) when behind."""
    check_schema(common.settings().database_url)
    click.echo(f"archive database at revision {head_revision()}")
