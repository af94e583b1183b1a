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
complete), 2 bad input or configuration (nothing was written), 130 interrupted.
"""

from __future__ import annotations

from typing import Any

import click
import redis

from refunds.cli import (
    actions,
    flower,
    inspection,
    intake,
    notifications,
    participants,
    serve,
    upgrade,
)
from refunds.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_NOT_DURABLE,
    EXIT_PROBLEM,
    EXIT_USAGE,
    fail,
)
from refunds.errors import ConfigError, NotDurableError, RefundNotFoundError


class _Cli(click.Group):
    """The command group; turns the pipeline's errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        except RefundNotFoundError as exc:
            fail(str(exc), EXIT_PROBLEM)
        except NotDurableError as exc:
            fail(str(exc), EXIT_NOT_DURABLE)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            fail(f"cannot reach Redis (REDIS_URL): {exc}", EXIT_USAGE)
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
    participants.participant,
    serve.web,
    flower.flower,
    upgrade.index_payments,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``refunds``; also ``python -m refunds.cli``)."""
    cli.main(args=argv, prog_name="refunds")
