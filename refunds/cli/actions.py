"""The operator's actions on one refund: ``approve``, ``retry``, ``cancel``, with who and why;
and the bulk retry after an outage: ``refunds retry --state needs_attention [--code] [--since]``.

The same functions as the HTTP operator routes (``refunds.actions``); the CLI adds flags and output.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config.settings import parse_duration
from refunds.cli import common
from refunds.cli.common import EXIT_PROBLEM, EXIT_USAGE, err, fail, out, print_json
from refunds.errors import OperatorActionError

if TYPE_CHECKING:
    from refunds.actions import ActionResult

HELP = {
    "approve": "Approve a refund held in awaiting_approval: it goes on to Confirm.",
    "retry": "Retry a refund in needs_attention from where its provider progress is.",
    "cancel": "Cancel a refund before Confirm (after Confirm it is MCE's to finish).",
}


def os_user() -> str:
    """Who runs the command: ``getpass.getuser()`` reads LOGNAME/USER/LNAME/USERNAME and falls
    back to the password database, so cron, systemd and ``docker exec`` (no $USER) still name
    someone. Empty only where no name can be found at all; the action then asks for ``--by``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


#: ``--by``: who acts, recorded in the history (the single and the bulk commands share it).
BY_OPTION = click.option(
    "--by",
    "actor",
    default=os_user,
    show_default="the OS user",
    help="Who acts (recorded in the history).",
)


def operator_command(name: str) -> click.Command:
    """The command for action ``name`` of ``refunds.actions.ACTIONS``."""

    @click.command(name=name, help=HELP[name])
    @click.argument("ref")
    @BY_OPTION
    @click.option("--reason", required=True, help="Why (recorded in the history).")
    @click.option("--json", "as_json", is_flag=True, help="The record as a JSON object.")
    def command(ref: str, actor: str, reason: str, as_json: bool) -> None:
        from refunds.actions import ACTIONS  # noqa: PLC0415
        from refunds.producer import Producer  # noqa: PLC0415 - Celery loads only when acting

        if not actor.strip():
            fail("say who you are (--by NAME)", EXIT_USAGE)
        settings = common.settings()
        producer = Producer(settings, ledger=common.quiet_ledger(settings))
        try:
            result = ACTIONS[name](producer.ledger, settings, ref, actor=actor, reason=reason)
        except OperatorActionError as exc:
            fail(str(exc), EXIT_PROBLEM)
        if result.next_task is not None:
            producer.nudge(ref, result.next_task, result.fence)
        if as_json:
            print_json(result.record.to_public())
            return
        out.print(f"{ref}: now [bold]{result.record.state}[/]")

    return command


def parse_since(text: str, at: float) -> float:
    """``--since``: an ISO 8601 time (UTC unless it says otherwise) or a duration ago ("2h")."""
    try:
        return at - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "an ISO 8601 time (2026-11-30T10:00Z) or a duration ago (90m, 2h, 1d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _bulk_retry(
    *,
    state: str,
    code: str | None,
    since: str | None,
    dry_run: bool,
    actor: str,
    reason: str,
    as_json: bool,
) -> None:
    from refunds.actions import retry_many, select_for_retry  # noqa: PLC0415
    from refunds.models import now  # noqa: PLC0415
    from refunds.producer import Producer  # noqa: PLC0415 - Celery loads only when acting

    settings = common.settings()
    producer = Producer(settings, ledger=common.quiet_ledger(settings))
    since_at = None if since is None else parse_since(since, now())
    try:
        records = select_for_retry(producer.ledger, state=state, code=code, since=since_at)
    except OperatorActionError as exc:
        fail(exc.why, EXIT_USAGE)
    label = "would retry" if dry_run else "retrying"
    columns = (
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=as_json) as progress:
        bar = progress.add_task(label, total=len(records))

        def each(ref: str, result: ActionResult | None, skipped: str | None) -> None:
            if result is not None and result.next_task is not None:
                producer.nudge(ref, result.next_task, result.fence)
            progress.advance(bar)

        try:
            report = retry_many(
                producer.ledger,
                settings,
                records,
                actor=actor,
                reason=reason,
                code=code,
                dry_run=dry_run,
                on_each=each,
            )
        except OperatorActionError as exc:
            fail(exc.why, EXIT_USAGE)
    if as_json:
        print_json(report.to_public())
        return
    verb = "would retry" if dry_run else "retried"
    out.print(f"{verb} [bold]{len(report.retried)}[/], skipped [bold]{len(report.skipped)}[/]")
    if dry_run:
        for ref in report.retried:
            out.print(f"  {ref}")
    for ref, why in report.skipped.items():
        out.print(f"  skipped {ref}: {why}")


@click.command(
    name="retry",
    help="Retry a refund in needs_attention from where its provider progress is; or, with "
    "--state needs_attention, every such refund (filtered by --code and --since).",
)
@click.argument("ref", required=False)
@click.option("--state", type=click.Choice(["needs_attention"]), help="Bulk: retry this state.")
@click.option("--code", help="Bulk: only refunds stopped with this error code.")
@click.option("--since", help="Bulk: only refunds stopped since (ISO 8601, or a duration ago: 2h).")
@click.option("--dry-run", is_flag=True, help="Bulk: list what would be retried; change nothing.")
@BY_OPTION
@click.option("--reason", required=True, help="Why (recorded in the history).")
@click.option("--json", "as_json", is_flag=True, help="The record (bulk: the summary) as JSON.")
def retry_command(
    *,
    ref: str | None,
    state: str | None,
    code: str | None,
    since: str | None,
    dry_run: bool,
    actor: str,
    reason: str,
    as_json: bool,
) -> None:
    if (ref is None) == (state is None):
        fail("give either REF or --state needs_attention", EXIT_USAGE)
    if not actor.strip():
        fail("say who you are (--by NAME)", EXIT_USAGE)
    if state is None:
        if code or since or dry_run:
            fail("--code, --since and --dry-run go with --state", EXIT_USAGE)
        single = operator_command("retry").callback
        assert single is not None  # noqa: S101
        single(ref=ref, actor=actor, reason=reason, as_json=as_json)
        return
    _bulk_retry(
        state=state,
        code=code,
        since=since,
        dry_run=dry_run,
        actor=actor,
        reason=reason,
        as_json=as_json,
    )


COMMANDS = [operator_command(name) for name in HELP if name != "retry"] + [retry_command]
