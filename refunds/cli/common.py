"""What every command shares: exit codes, the consoles, the one way out of an error, settings.

Exit codes are part of the interface (scripts branch on them): 0 success, 1 a refund-level problem
(conflict, unknown reference, an operator action that does not apply, a demo that did not
complete), 2 bad input or configuration (nothing was written), 75 (EX_TEMPFAIL) Redis trouble
or a write not yet on enough replicas (run it again later), 130 interrupted.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click
import redis

from config.settings import Settings, implicit_redis_notice, load_settings
from refunds.archive.db import require_current_schema
from refunds.archive.reads import Refunds, archived_lookup, refunds_of
from refunds.cli.progress import make_console
from refunds.store.connection import redis_client
from refunds.store.epoch import watch
from refunds.store.ledger import Ledger

EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_NOT_DURABLE = 75  # EX_TEMPFAIL: written, not yet on enough replicas; run it again
EXIT_UNAVAILABLE = 75  # EX_TEMPFAIL: Redis cannot be reached, is too slow or refuses writes

out = make_console()
err = make_console(stderr=True)


def fail(message: str, code: int = EXIT_PROBLEM) -> NoReturn:
    """One line on stderr, then exit: the CLI's only way out of an error."""
    click.echo(f"refunds: {message}", err=True)
    raise click.exceptions.Exit(code)


def redis_problem(exc: redis.RedisError) -> str:
    """One line for any Redis error and what to do: a connection's own first line (it names the
    address, for the operator), else the class only (a refusal's text may quote the command)."""
    name = type(exc).__name__
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        first = str(exc).splitlines()[0] if str(exc) else name
        return f"cannot reach Redis (REDIS_URL): {first}; run it again when Redis is back"
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return (
            "Redis is out of memory (maxmemory reached under noeviction) and refused the write; "
            "free memory or raise maxmemory, then run it again"
        )
    return f"Redis refused the command ({name}); run it again, or see the Redis log"


def settings() -> Settings:
    """The command's Settings; says on stderr when the sandbox fell back to its local Redis."""
    loaded = load_settings()
    notice = implicit_redis_notice(loaded)
    if notice is not None:
        click.echo(f"refunds: {notice}", err=True)
    return loaded


def ledger(settings: Settings) -> Ledger:
    """The ledger, after a look at its epoch: a recorded reset is said once on stderr (reads go
    on: an operator needs them to look around)."""
    found = quiet_ledger(settings)
    reset = watch(found.redis, "cli").check()
    if reset is not None:
        click.echo(f"refunds: warning: {reset.describe()}", err=True)
    return found


def quiet_ledger(settings: Settings) -> Ledger:
    """The ledger, its epoch watch reporting nothing itself: for a Producer (intake refused for
    a lost ledger is the command's one ``refunds: ...`` line, exit 75) and for the ``redis``
    commands, which are about the epoch."""
    found = Ledger(redis_client(settings), archived=archived_lookup(settings))
    watch(found.redis, "cli", quiet=True)
    return found


def refunds(settings: Settings) -> Refunds:
    """Reads from Redis or the archive; the archive's schema must be current (else exit 2)."""
    require_current_schema(settings.database_url)
    return refunds_of(ledger(settings), settings)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
