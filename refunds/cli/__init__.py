"""``refunds``: the operator's and the merchant's command line.

Commands, one module per concern: ``intake`` (``submit``: one intent from flags, or a CSV/JSONL
batch), ``inspection`` (``status``, ``list``, ``watch``, ``stats``), ``actions`` (the operator's
``approve``/``retry``/``cancel``) and ``serve`` (``web``: the HTTP API, ``sandbox``: the simulator
in the foreground, ``demo``: the whole pipeline on this machine); ``views`` renders, ``progress``
is the live view shared with the demo, ``common`` holds exit codes and consoles. Every command
builds Settings once with ``load_settings`` and turns the pipeline's own errors into one readable
``refunds: ...`` line on stderr, because an operator at 3 a.m. needs the reason, not a traceback.

Exit codes are part of the interface (scripts branch on them): 0 success, 1 a refund-level problem
(conflict, unknown reference, an operator action that does not apply, a demo that did not
complete), 2 bad input or configuration (nothing was written), 75 (EX_TEMPFAIL) Redis cannot be
reached, timed out or refused the command (out of memory included), or a write is not yet on
enough replicas: run it again later; 130 interrupted.
"""

from __future__ import annotations

from typing import Any

import click
import redis
import sqlalchemy.exc

from refunds.archive.db import SchemaBehindError
from refunds.cli import (
    actions,
    conflicts,
    db,
    export,
    flower,
    inspection,
    intake,
    notifications,
    participants,
    redis_epoch,
    rules,
    serve,
    upgrade,
)
from refunds.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_NOT_DURABLE,
    EXIT_PROBLEM,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    fail,
    redis_problem,
)
from refunds.errors import (
    ArchiveUnavailableError,
    ConfigError,
    LedgerResetError,
    NotDurableError,
    RefundNotFoundError,
)


class _Cli(click.Group):
    """The command group; turns the pipeline's errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, SchemaBehindError) as exc:
            fail(str(exc), EXIT_USAGE)
        except RefundNotFoundError as exc:
            fail(str(exc), EXIT_PROBLEM)
        except NotDurableError as exc:
            fail(str(exc), EXIT_NOT_DURABLE)
        except LedgerResetError as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        except ArchiveUnavailableError as exc:
            fail(str(exc), EXIT_PROBLEM)
        except sqlalchemy.exc.OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            fail(f"cannot reach the archive database (REFUNDS_DATABASE_URL): {reason}", EXIT_USAGE)
        except redis.RedisError as exc:
            fail(redis_problem(exc), EXIT_UNAVAILABLE)
        except KeyboardInterrupt:
            click.echo("refunds: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="refund-pipeline", prog_name="refunds")
def cli() -> None:
    """Submit, follow and inspect MCE crypto refunds.

    Configuration comes from the environment (REDIS_URL, MCE_BASE_URL, MCE_CLIENT_ID,
    MCE_CLIENT_SECRET, MCE_WEBHOOK_SECRET, REFUNDS_*); REFUNDS_PROFILE=sandbox needs none of them.
    """


for _command in (
    intake.submit,
    inspection.status,
    inspection.list_,
    inspection.watch,
    inspection.stats,
    serve.sandbox,
    serve.demo,
    *actions.COMMANDS,
    notifications.notifications,
    conflicts.conflicts,
    participants.participant,
    serve.web,
    flower.flower,
    upgrade.index_payments,
    upgrade.index_inflight,
    db.db,
    export.export,
    rules.rules,
    redis_epoch.redis_group,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``refunds``; also ``python -m refunds.cli``)."""
    cli.main(args=argv, prog_name="refunds")
