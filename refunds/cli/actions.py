"""The operator's actions on one refund: ``approve``, ``retry``, ``cancel``, with who and why.

The same functions as the HTTP operator routes (``refunds.actions``); the CLI adds flags and output.
"""

from __future__ import annotations

import os

import click

from refunds.cli import common
from refunds.cli.common import EXIT_PROBLEM, fail, out, print_json
from refunds.errors import OperatorActionError

HELP = {
    "approve": "Approve a refund held in awaiting_approval: it goes on to Confirm.",
    "retry": "Retry a refund in needs_attention from where its provider progress is.",
    "cancel": "Cancel a refund before Confirm (after Confirm it is MCE's to finish).",
}


def operator_command(name: str) -> click.Command:
    """The command for action ``name`` of ``refunds.actions.ACTIONS``."""

    @click.command(name=name, help=HELP[name])
    @click.argument("ref")
    @click.option(
        "--by",
        "actor",
        default=lambda: os.environ.get("USER", ""),
        show_default="$USER",
        help="Who acts (recorded in the history).",
    )
    @click.option("--reason", required=True, help="Why (recorded in the history).")
    @click.option("--json", "as_json", is_flag=True, help="The record as a JSON object.")
    def command(ref: str, actor: str, reason: str, as_json: bool) -> None:
        from refunds.actions import ACTIONS  # noqa: PLC0415
        from refunds.producer import Producer  # noqa: PLC0415 - Celery loads only when acting

        settings = common.settings()
        producer = Producer(settings)
        try:
            result = ACTIONS[name](producer.ledger, settings, ref, actor=actor, reason=reason)
        except OperatorActionError as exc:
            fail(str(exc), EXIT_PROBLEM)
        if result.next_task is not None:
            producer.celery.send_task(f"refunds.{result.next_task}", args=[ref])
        if as_json:
            print_json(result.record.to_public())
            return
        out.print(f"{ref}: now [bold]{result.record.state}[/]")

    return command


COMMANDS = [operator_command(name) for name in HELP]
