"""``refunds redis epoch`` and ``refunds redis ack-reset``: the ledger's epoch, for an operator.

When a Redis restarted empty (``refunds.store.epoch``), every process refuses intake and reports
red until a person has looked: ``ack-reset`` records who acknowledged it and why, and writes the
new epoch the processes adopt. What to check before is in docs/operator-runbook.md.
"""

from __future__ import annotations

import time

import click

from refunds.cli import common
from refunds.cli.actions import BY_OPTION
from refunds.cli.common import EXIT_PROBLEM, EXIT_USAGE, fail, out, print_json
from refunds.errors import NoResetToAcknowledgeError
from refunds.store import epoch as epochs


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


@click.group(name="redis", help="The ledger's Redis: its epoch, and acknowledging a reset.")
def redis_group() -> None:
    """Commands about the Redis that holds the ledger."""


@redis_group.command(name="epoch", help="Show the ledger's epoch and any recorded reset.")
@click.option("--json", "as_json", is_flag=True, help="As a JSON object.")
def show_epoch(as_json: bool) -> None:
    client = common.quiet_ledger(common.settings()).redis
    current, lost = epochs.read(client)
    if as_json:
        print_json(
            {
                "epoch": None if current is None else current.__dict__,
                "reset": None if lost is None else lost.__dict__,
            }
        )
        return
    if current is None:
        out.print("no epoch yet (written by the first process that uses this Redis)")
    else:
        line = f"epoch {current.id}: {current.origin} by {current.by} at {_stamp(current.created)}"
        if current.reason:
            line += f" ({current.reason})"
        out.print(line)
    if lost is not None:
        out.print(f"[bold red]RESET[/]: {lost.describe()}")


@redis_group.command(
    name="ack-reset",
    help="Acknowledge that Redis lost the ledger: record who and why, write a new epoch; "
    "intake resumes.",
)
@BY_OPTION
@click.option("--reason", required=True, help="What was checked and decided (recorded).")
def ack_reset(actor: str, reason: str) -> None:
    if not actor.strip():
        fail("say who you are (--by NAME)", EXIT_USAGE)
    if not reason.strip():
        fail("--reason must say what was checked", EXIT_USAGE)
    client = common.quiet_ledger(common.settings()).redis
    try:
        new = epochs.acknowledge(client, reason=reason.strip(), by=actor.strip())
    except NoResetToAcknowledgeError as exc:
        fail(str(exc), EXIT_PROBLEM)
    out.print(f"acknowledged: new epoch {new.id} replaces {new.replaces}; intake resumes")
