"""``refunds submit``: one intent from flags, or a CSV/JSONL batch with ``--file``."""

from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config.settings import Settings
from refunds.batch import BatchReport, detect_format, iter_intents, scan_batch, spool
from refunds.batch.validate import MAX_LISTED, validated
from refunds.cli import common
from refunds.cli.common import EXIT_PROBLEM, EXIT_USAGE, err, fail, out, print_json
from refunds.cli.views import record_view
from refunds.errors import (
    BatchError,
    ConflictError,
    FieldError,
    InvalidIntentError,
    PaymentConflictError,
)
from refunds.models import RefundIntent
from refunds.participants.registry import intake_problem, registry_of

if TYPE_CHECKING:
    from refunds.producer import BatchResult

CHUNK = 1000  # intents per pipelined submit_many: one round trip each, bounded memory

FLAG_FOR_FIELD = {
    "originalTransactionType": "--type",
    "originalTransactionId": "--txn-id",
    "clientReference": "--ref",
    "refundAddress": "--address",
    "participantCode": "--participant",
}


@click.command()
@click.option("--type", "txn_type", type=int, help="originalTransactionType (1, 2 or 3).")
@click.option("--txn-id", help="originalTransactionId of the payment to refund.")
@click.option("--ref", help="clientReference: your unique id for this refund.")
@click.option("--address", help="refundAddress (optional).")
@click.option(
    "--participant",
    help="participantCode: whose refund, in a PSP deployment (REFUNDS_REGISTRY_FILE).",
)
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    help="A CSV (with headers) or JSONL batch of intents; - reads standard input (with --format).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    help="Batch format, when the file's extension does not say.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar for batches.")
def submit(
    *,
    txn_type: int | None,
    txn_id: str | None,
    ref: str | None,
    address: str | None,
    participant: str | None,
    file_: Path | None,
    fmt: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Submit one refund intent (flags) or a batch (--file).

    Submitting is idempotent on clientReference: the same intent again returns the existing
    record; the same reference with other content is a conflict (exit 1). An invalid batch is
    rejected whole (exit 2, every bad field listed with its line), and nothing is written.
    """
    settings = common.settings()
    if file_ is not None:
        if any(v is not None for v in (txn_type, txn_id, ref, address, participant)):
            raise click.UsageError("give either --file or --type/--txn-id/--ref, not both")
        _submit_batch(settings, file_, fmt, as_json=as_json, quiet=quiet)
        return
    if fmt is not None:
        raise click.UsageError("--format goes with --file")
    missing = [
        flag
        for flag, v in (("--type", txn_type), ("--txn-id", txn_id), ("--ref", ref))
        if v is None
    ]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or give a batch with --file)")
    data = {
        "originalTransactionType": txn_type,
        "originalTransactionId": txn_id,
        "clientReference": ref,
        "refundAddress": address,
    }
    if participant is not None:
        data["participantCode"] = participant
    try:
        intent = RefundIntent.parse(data)
        _check_participant(settings, intent)
    except InvalidIntentError as exc:
        for e in exc.errors:
            flag = FLAG_FOR_FIELD.get(e.field)
            click.echo(f"{e.field} ({flag}): {e.message}" if flag else str(e), err=True)
        fail("invalid intent; nothing was submitted", EXIT_USAGE)
    _submit_one(settings, intent, as_json=as_json)


def _check_participant(settings: Settings, intent: RefundIntent) -> None:
    problem = intake_problem(registry_of(settings), intent.participant)
    if problem is not None:
        raise InvalidIntentError([FieldError("participantCode", problem)])


def _submit_one(settings: Settings, intent: RefundIntent, *, as_json: bool) -> None:
    from refunds.producer import Producer  # noqa: PLC0415 - Celery loads only when submitting

    try:
        result = Producer(settings, ledger=common.quiet_ledger(settings)).submit_intent(intent)
    except ConflictError as exc:
        fail(str(exc), EXIT_PROBLEM)
    record = result.record
    if as_json:
        print_json(record.to_public())
        return
    if result.created:
        out.print(f"[green]submitted[/] {record.client_reference}")
    else:
        out.print(
            f"{record.client_reference} [yellow]already submitted[/] (identical intent; "
            "nothing changed)"
        )
    out.print(record_view(record))


def _submit_batch(
    settings: Settings, path: Path, fmt: str | None, *, as_json: bool, quiet: bool
) -> None:
    """Validate the whole file (pass 1), then stream its intents in chunks (pass 2).

    Standard input (and any pipe) cannot be read twice, so it is first copied to a temporary
    file, removed afterwards.
    """
    try:
        kind = detect_format(path, fmt)  # before spooling: stdin has no extension to go by
    except BatchError as exc:
        _refuse_batch(path, exc.errors, exc.total)
    spooled = None
    if str(path) == "-":
        spooled = spool(sys.stdin.buffer)
    elif not path.is_file():  # a pipe such as <(...) cannot be read twice either
        with path.open("rb") as stream:
            spooled = spool(stream)
    try:
        report = scan_batch(spooled or path, kind)
        if not report.ok:
            _refuse_batch(path, report.problems, report.problem_count)
        refused = _participant_problems(settings, spooled or path, report)
        if refused:
            _refuse_batch(path, refused[:MAX_LISTED], len(refused))
        try:
            total = _send_batch(settings, spooled or path, report, quiet=quiet)
        except BatchError as exc:  # pass 2 found the file changed since pass 1 validated it
            for e in exc.errors:
                click.echo(str(e), err=True)
            name = "standard input" if str(path) == "-" else str(path)
            fail(f"{name}: refused in the second pass", EXIT_USAGE)
    finally:
        if spooled is not None:
            spooled.unlink(missing_ok=True)
    _print_batch(total, report, as_json=as_json)
    if total.conflicts:
        raise click.exceptions.Exit(EXIT_PROBLEM)


def _participant_problems(settings: Settings, path: Path, report: BatchReport) -> list[FieldError]:
    """Every line whose participantCode this deployment refuses (not in the registry, disabled,
    or missing where the registry has no default), checked before anything is sent."""
    registry = registry_of(settings)
    return [
        FieldError("participantCode", problem, line)
        for line, intent in validated(path, report.format, BatchReport(path, report.format))
        if (problem := intake_problem(registry, intent.participant)) is not None
    ]


def _refuse_batch(path: Path, problems: list[FieldError], count: int) -> NoReturn:
    for e in problems:
        click.echo(str(e), err=True)
    if count > len(problems):
        click.echo(f"... and {count - len(problems)} more (the first {len(problems)} are listed)",
                   err=True)
    name = "standard input" if str(path) == "-" else str(path)
    fail(f"{name}: {count} problem{'s' * (count != 1)}; nothing was submitted", EXIT_USAGE)


def _send_batch(settings: Settings, path: Path, report: BatchReport, *, quiet: bool) -> BatchResult:
    from refunds.producer import BatchResult, Producer  # noqa: PLC0415

    producer = Producer(settings, ledger=common.quiet_ledger(settings))
    total = BatchResult()
    progress = Progress(
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet or not err.is_terminal,
        transient=True,
    )
    intents = iter_intents(path, report.format, expect=report.stamp)
    with progress:
        task = progress.add_task("submit", total=report.intents)
        while chunk := list(islice(intents, CHUNK)):
            result = producer.submit_many(chunk)
            total.created += result.created
            total.existing += result.existing
            total.conflicts += result.conflicts
            progress.advance(task, len(chunk))
    return total


def _print_batch(total: BatchResult, report: BatchReport, *, as_json: bool) -> None:
    """The summary; identical repeated rows are listed only when the file had some."""
    repeats = [{"line": d.line, "sameAs": d.first_line} for d in report.duplicates]
    summary: dict[str, Any] = {
        "created": len(total.created),
        "existing": len(total.existing),
        "conflicts": [
            {
                "clientReference": c.client_reference,
                "differences": c.differences,
                **(
                    {"existingReference": c.existing_reference}
                    if isinstance(c, PaymentConflictError)
                    else {}
                ),
            }
            for c in total.conflicts
        ],
    }
    if report.duplicate_count:
        summary["duplicates"] = {"count": report.duplicate_count, "rows": repeats}
    if as_json:
        print_json(summary)
        return
    out.print(f"created: {len(total.created)}")
    out.print(f"already existing: {len(total.existing)}")
    out.print(f"conflicts: {len(total.conflicts)}")
    for c in total.conflicts:
        out.print(f"  {c}")
    if report.duplicate_count:
        listed = ", ".join(f"{r['line']} (same as {r['sameAs']})" for r in repeats)
        more = report.duplicate_count - len(repeats)
        out.print(
            f"duplicate rows: {report.duplicate_count} (identical repeats, submitted once): "
            f"line {listed}{f' and {more} more' if more else ''}",
            highlight=False,
        )
