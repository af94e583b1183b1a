"""What every command shares: exit codes, the consoles, the one way out of an error, settings.

Exit codes are part of the interface (scripts branch on them): 0 success, 1 a refund-level problem
(conflict, unknown reference, an operator action that does not apply, a demo that did not
complete), 2 bad input or configuration (nothing was written), 130 interrupted.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click

from config.settings import Settings, implicit_redis_notice, load_settings
from refunds.archive.db import require_current_schema
from refunds.archive.reads import Refunds, archived_lookup, refunds_of
from refunds.cli.progress import make_console
from refunds.store.connection import redis_client
from refunds.store.ledger import Ledger

EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_NOT_DURABLE = 75  # EX_TEMPFAIL: written, not yet on enough replicas; run it again

out = make_console()
err = make_console(stderr=True)


def fail(message: str, code: int = EXIT_PROBLEM) -> NoReturn:
    """One line on stderr, then exit: the CLI's only way out of an error."""
    click.echo(f"refunds: {message}", err=True)
    raise click.exceptions.Exit(code)


def settings() -> Settings:
    """The command's Settings; says on stderr when the sandbox fell back to its local Redis."""
    loaded = load_settings()
    notice = implicit_redis_notice(loaded)
    if notice is not None:
        click.echo(f"refunds: {notice}", err=True)
    return loaded


def ledger(settings: Settings) -> Ledger:
    return Ledger(redis_client(settings), archived=archived_lookup(settings))


def refunds(settings: Settings) -> Refunds:
    """Reads from Redis or the archive; the archive's schema must be current (else exit 2)."""
    require_current_schema(settings.database_url)
    return refunds_of(ledger(settings), settings)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
