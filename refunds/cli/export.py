"""``refunds export``: the period's refunds for finance, from the SQL archive, with a manifest."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from refunds.archive.db import engine_for, require_current_schema
from refunds.archive.export_files import FORMATS, Format, write_export
from refunds.archive.export_rows import Period, rows
from refunds.archive.reads import window_edge
from refunds.cli import common
from refunds.models import State


def _moment(value: str, name: str) -> float:
    """An ISO 8601 date or time (UTC when it has no offset), as epoch seconds."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2026-07-01 or 2026-07-01T00:00Z)",
            param_hint=name,
        ) from None
    return window_edge(parsed) or 0.0


@click.command("export")
@click.option("--from", "start", required=True, help="Created at or after (ISO 8601, UTC).")
@click.option("--to", "end", required=True, help="Created before (ISO 8601, UTC): half-open.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in State]),
    help="Only refunds in this state (repeatable).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="The file (default: in cwd)."
)
def export(start: str, end: str, states: tuple[str, ...], fmt: Format, out: Path | None) -> None:
    """Write the refunds created in [--from, --to) as CSV, XLSX or Parquet, with a manifest
    (rows, sums per currency and state, the file's sha256) beside it."""
    period = Period(_moment(start, "--from"), _moment(end, "--to"), tuple(states))
    if period.end <= period.start:
        raise click.BadParameter("must be after --from", param_hint="--to")
    settings = common.settings()
    require_current_schema(settings.database_url)
    path = out or Path(f"refunds-{start}-{end}.{fmt}".replace(":", ""))
    manifest = write_export(path, fmt, rows(engine_for(settings.database_url), period), period)
    click.echo(f"{manifest['rows']} refunds -> {path} (sha256 {manifest['sha256']})")
