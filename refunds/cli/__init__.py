"""``refunds``: the operator's and the merchant's command line.

Commands: ``submit`` (one intent from flags, or a CSV/JSONL batch), ``status``, ``list``,
``watch``, ``stats``, the operator actions ``approve``/``retry``/``cancel``, ``web`` (the HTTP
API), ``sandbox`` (the simulator in the foreground) and ``demo`` (the whole pipeline on this
machine). Every command builds Settings once with ``load_settings`` and turns the pipeline's own
errors into one readable ``refunds: ...`` line on stderr, because an operator at 3 a.m. needs the
reason, not a traceback.

Exit codes are part of the interface (scripts branch on them): 0 success, 1 a refund-level problem
(conflict, unknown reference, an operator action that does not apply, a demo that did not
complete), 2 bad input or configuration (nothing
was written), 130 interrupted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NoReturn

import click
import redis
from rich.console import Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from config.settings import Settings, load_settings
from refunds.batch import parse_batch
from refunds.cli.progress import (
    STATE_ORDER,
    RefundView,
    follow,
    make_console,
    render_snapshot,
    state_text,
)
from refunds.errors import (
    ConfigError,
    ConflictError,
    InvalidIntentError,
    NotDurableError,
    OperatorActionError,
    RefundNotFoundError,
)
from refunds.models import RefundIntent, RefundRecord, State, iso
from refunds.ops.snapshot import OpsStats, gather
from refunds.store.connection import redis_client
from refunds.store.ledger import Ledger

EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_NOT_DURABLE = 75  # EX_TEMPFAIL: written, not yet on enough replicas; run it again

CHUNK = 1000  # intents per pipelined submit_many: one round trip each, bounded memory

FLAG_FOR_FIELD = {
    "originalTransactionType": "--type",
    "originalTransactionId": "--txn-id",
    "clientReference": "--ref",
    "refundAddress": "--address",
}


out = make_console()
err = make_console(stderr=True)


def fail(message: str, code: int = EXIT_PROBLEM) -> NoReturn:
    """One line on stderr, then exit: the CLI's only way out of an error."""
    click.echo(f"refunds: {message}", err=True)
    raise click.exceptions.Exit(code)


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


def _settings() -> Settings:
    return load_settings()


def _ledger(settings: Settings) -> Ledger:
    return Ledger(redis_client(settings))


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="refund-pipeline", prog_name="refunds")
def cli() -> None:
    """Submit, follow and inspect MCE crypto refunds.

    Configuration comes from the environment (REDIS_URL, MCE_BASE_URL, MCE_CLIENT_ID,
    MCE_CLIENT_SECRET, MCE_WEBHOOK_SECRET, REFUNDS_*); REFUNDS_PROFILE=sandbox needs none of them.
    """


# --- submit ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--type", "txn_type", type=int, help="originalTransactionType (1, 2 or 3).")
@click.option("--txn-id", help="originalTransactionId of the payment to refund.")
@click.option("--ref", help="clientReference: your unique id for this refund.")
@click.option("--address", help="refundAddress (optional).")
@click.option(
    "--file",
    "file_",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CSV (with headers) or JSONL batch of intents.",
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
    settings = _settings()
    if file_ is not None:
        if any(v is not None for v in (txn_type, txn_id, ref, address)):
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
    try:
        intent = RefundIntent.parse(data)
    except InvalidIntentError as exc:
        for e in exc.errors:
            flag = FLAG_FOR_FIELD.get(e.field)
            click.echo(f"{e.field} ({flag}): {e.message}" if flag else str(e), err=True)
        fail("invalid intent; nothing was submitted", EXIT_USAGE)
    _submit_one(settings, intent, as_json=as_json)


def _submit_one(settings: Settings, intent: RefundIntent, *, as_json: bool) -> None:
    from refunds.producer import Producer  # noqa: PLC0415 - Celery loads only when submitting

    try:
        result = Producer(settings).submit_intent(intent)
    except ConflictError as exc:
        fail(str(exc), EXIT_PROBLEM)
    record = result.record
    if as_json:
        _print_json(record.to_public())
        return
    if result.created:
        out.print(f"[green]submitted[/] {record.client_reference}")
    else:
        out.print(
            f"{record.client_reference} [yellow]already submitted[/] (identical intent; "
            "nothing changed)"
        )
    out.print(_record_view(record))


def _submit_batch(
    settings: Settings, path: Path, fmt: str | None, *, as_json: bool, quiet: bool
) -> None:
    from refunds.producer import BatchResult, Producer  # noqa: PLC0415

    try:
        intents = parse_batch(path, fmt)
    except InvalidIntentError as exc:
        for e in exc.errors:
            click.echo(str(e), err=True)
        n = len(exc.errors)
        fail(f"{path}: {n} problem{'s' * (n != 1)}; nothing was submitted", EXIT_USAGE)
    producer = Producer(settings)
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
    with progress:
        task = progress.add_task("submit", total=len(intents))
        for start in range(0, len(intents), CHUNK):
            chunk = intents[start : start + CHUNK]
            result = producer.submit_many(chunk)
            total.created += result.created
            total.existing += result.existing
            total.conflicts += result.conflicts
            progress.advance(task, len(chunk))
    if as_json:
        _print_json(
            {
                "created": len(total.created),
                "existing": len(total.existing),
                "conflicts": [
                    {"clientReference": c.client_reference, "differences": c.differences}
                    for c in total.conflicts
                ],
            }
        )
    else:
        out.print(f"created: {len(total.created)}")
        out.print(f"already existing: {len(total.existing)}")
        out.print(f"conflicts: {len(total.conflicts)}")
        for c in total.conflicts:
            out.print(f"  {c}")
    if total.conflicts:
        raise click.exceptions.Exit(EXIT_PROBLEM)


# --- status and list ------------------------------------------------------------------------------


@cli.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The record as a JSON object.")
def status(ref: str, as_json: bool) -> None:
    """Show one refund: its state, provider ids, last error and history."""
    record = _ledger(_settings()).get(ref)
    if as_json:
        _print_json(record.to_public())
        return
    out.print(_record_view(record))


@cli.command("list")
@click.option(
    "--state", type=click.Choice([s.value for s in State]), help="Only refunds in this state."
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many, oldest first (0: no limit).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of records.")
def list_(state: str | None, limit: int, as_json: bool) -> None:
    """List refunds, oldest first, optionally only those in one state."""
    ledger = _ledger(_settings())
    wanted = State(state) if state else None
    records = ledger.get_many(ledger.references(wanted, limit or None))
    if as_json:
        _print_json([r.to_public() for r in records])
        return
    counts = ledger.counts()
    available = counts.get(state, 0) if state else sum(counts.values())
    table = Table(
        "clientReference",
        "state",
        "type",
        "originalTransactionId",
        "cryptoRefundId",
        "attempts",
        "updated",
        "last error",
        title=None,
    )
    for r in records:
        error = (r.last_error or {}).get("code") or (r.last_error or {}).get("type") or ""
        table.add_row(
            r.client_reference,
            state_text(r.state),
            str(r.original_transaction_type),
            r.original_transaction_id,
            r.crypto_refund_id or "",
            str(r.attempts),
            iso(r.updated_at) or "",
            str(error),
        )
    out.print(table)
    out.print(f"{len(records)} of {available}" + (f" in state {state}" if state else ""))


def _record_view(record: RefundRecord) -> RenderableType:
    """The human view of one record: fields, last error, history."""
    pub = record.to_public()
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for key in (
        "clientReference",
        "state",
        "originalTransactionType",
        "originalTransactionId",
        "refundAddress",
        "cryptoRefundId",
        "providerStatus",
        "amount",
        "currency",
        "blockchain",
        "feeAmount",
        "feeCurrency",
        "txnHash",
        "attempts",
        "polls",
        "createdAt",
        "updatedAt",
    ):
        value = pub.get(key)
        if value is None:
            continue
        fields.add_row(key, state_text(record.state) if key == "state" else str(value))
    parts: list[RenderableType] = [fields]
    if record.last_error:
        e = record.last_error
        error = Table.grid(padding=(0, 2))
        error.add_column(style="bold red")
        error.add_column()
        for key in ("type", "message", "operation", "status", "code", "logId"):
            if e.get(key) not in (None, ""):
                error.add_row(f"lastError.{key}", str(e[key]))
        parts.append(error)
    history = Table("at", "from", "to", "reason", "actor", title="history", title_justify="left")
    for h in record.history:
        history.add_row(
            iso(h.at) or "", h.from_state or "", state_text(h.to_state), h.reason, h.actor
        )
    parts.append(history)
    return Group(*parts)


# --- watch ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--refs-prefix", help="Only refunds whose clientReference starts with this.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
def watch(refs_prefix: str | None, interval: float, once: bool) -> None:
    """Live counts by state until every refund in view is final (then exit 0).

    While no refund is in view yet, it waits for some: start it before submitting.
    """
    view = RefundView(_ledger(_settings()), prefix=refs_prefix)
    title = f"refunds {refs_prefix}*" if refs_prefix else "refunds"
    if once:
        out.print(render_snapshot(view.refresh(), title))
        return
    follow(view, title, interval=interval, console=out)


# --- stats ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="The snapshot as a JSON object.")
def stats(as_json: bool) -> None:
    """Counts by state, the oldest refund not final, timers, provider errors, calls and tokens.

    Reads the ledger's indexes and the shared counters, never every record: cheap enough to run
    against a ledger of millions of refunds.
    """
    snapshot = gather(_ledger(_settings()))
    if as_json:
        _print_json(snapshot.to_public())
        return
    out.print(_stats_view(snapshot))


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _stats_view(s: OpsStats) -> RenderableType:
    states = Table(
        "state", "count", "oldest", "age", title="refunds by state", title_justify="left"
    )
    for state in STATE_ORDER:
        n = s.counts.get(state.value, 0)
        o = s.oldest_by_state.get(state.value)
        states.add_row(
            state_text(state),
            str(n),
            o.client_reference if o else "",
            _age(o.age(s.at)) if o else "",
            style="" if n else "dim",
        )
    states.add_row("total", str(s.total), "", "", style="bold")
    parts: list[RenderableType] = [states]
    if s.oldest is not None:
        o = s.oldest
        parts.append(
            Text.assemble(
                "oldest not final: ",
                (o.client_reference, "bold"),
                " (",
                state_text(o.state),
                f"), created {iso(o.created_at)}, {_age(o.age(s.at))} ago",
            )
        )
    else:
        parts.append(Text("nothing in flight: every refund is final"))
    tick = "never" if s.since_last_tick is None else f"{s.since_last_tick:.1f} s ago"
    parts.append(
        Text(
            f"timers: {s.timer_count} pending, lag {s.timer_lag:.1f} s, last scheduler tick {tick}"
        )
    )
    window = "hour" if s.error_window == 3600 else _age(s.error_window)
    errors = Table("code", "count", title=f"provider errors, last {window}", title_justify="left")
    for code, n in s.errors.items():
        errors.add_row(code, str(n))
    parts.append(errors if s.errors else Text(f"provider errors, last {window}: none"))
    calls = Table("operation", "outcome", "count", title="provider calls", title_justify="left")
    for operation, outcomes in s.calls.items():
        for outcome, n in outcomes.items():
            ok = outcome.isdigit() and 200 <= int(outcome) < 300
            calls.add_row(operation, Text(outcome, style="" if ok else "yellow"), str(n))
    parts.append(calls if s.calls else Text("provider calls: none recorded"))
    parts.append(Text(f"token fetches: {s.token_fetches}"))
    held = s.counts.get(State.NEEDS_ATTENTION.value, 0)
    if held:
        parts.append(
            Text(f"{held} need a human: refunds list --state needs_attention", style="magenta")
        )
    return Group(*parts)


# --- sandbox and demo -----------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8099, show_default=True)
@click.option(
    "--config",
    "config_json",
    help="Simulator switches as JSON, e.g. "
    '\'{"processing_seconds": 2, "error_rates": {"503": 0.1}}\'.',
)
def sandbox(host: str, port: int, config_json: str | None) -> None:
    """Run the MCE simulator in the foreground (Ctrl-C stops it).

    This is the fake provider, not a pipeline process, so it needs no pipeline settings; point
    the pipeline at it with REFUNDS_PROFILE=sandbox and MCE_BASE_URL=http://HOST:PORT.
    """
    # Imported here: refunds code never depends on the simulator at import time.
    from sandbox.config import SandboxConfig  # noqa: PLC0415
    from sandbox.server import serve  # noqa: PLC0415

    try:
        config = SandboxConfig().merge(json.loads(config_json or "{}"))
    except ValueError as exc:  # also json.JSONDecodeError
        fail(f"bad --config: {exc}", EXIT_USAGE)
    try:
        serve(host, port, config)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE)


@cli.command()
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many refunds to push through.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Pool size of each worker.",
)
@click.option(
    "--processing-seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="How long the sandbox keeps a refund processing on chain.",
)
@click.option(
    "--token-ttl",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Lifetime of the sandbox's bearer tokens, in seconds.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds to wait for every refund to be final  [default: 120 + count/2]",
)
@click.option("--keep-dir", is_flag=True, help="Keep the working directory (logs, Redis data).")
@click.option(
    "--webhooks/--no-webhooks",
    default=True,
    show_default=True,
    help="The sandbox sends status webhooks to the demo's web app.",
)
@click.option(
    "--serve",
    is_flag=True,
    help="After the summary, keep everything running (for curl) until Ctrl-C.",
)
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port of the HTTP API (a free one if taken).",
)
@click.option(
    "--sandbox-port",
    type=click.IntRange(1, 65535),
    default=8099,
    show_default=True,
    help="Port of the sandbox (a free one if taken).",
)
@click.option("--json", "as_json", is_flag=True, help="The summary as a JSON object on stdout.")
def demo(
    *,
    count: int,
    workers: int,
    concurrency: int,
    processing_seconds: float,
    token_ttl: float,
    timeout: float | None,
    keep_dir: bool,
    as_json: bool,
    webhooks: bool,
    serve: bool,
    web_port: int,
    sandbox_port: int,
) -> None:
    """Run the whole pipeline here: Redis, the sandbox, workers and beat, then N refunds.

    Uses REDIS_URL when set (it must be reachable), else starts a private Redis. Exits 0 only if
    every refund ends `completed`.
    """
    from devstack.demo import DemoOptions, run_demo  # noqa: PLC0415

    code = run_demo(
        DemoOptions(
            count=count,
            workers=workers,
            concurrency=concurrency,
            processing_seconds=processing_seconds,
            token_ttl=token_ttl,
            keep_dir=keep_dir,
            webhooks=webhooks,
            serve=serve,
            web_port=web_port,
            sandbox_port=sandbox_port,
            as_json=as_json,
            timeout_seconds=timeout,
        )
    )
    raise click.exceptions.Exit(code)


# --- operator actions and the web app ---------------------------------------------------------


def _operator_command(name: str, help_text: str) -> None:
    @cli.command(name=name, help=help_text)
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
        from refunds.producer import Producer  # noqa: PLC0415

        settings = _settings()
        producer = Producer(settings)
        try:
            result = ACTIONS[name](producer.ledger, settings, ref, actor=actor, reason=reason)
        except OperatorActionError as exc:
            fail(str(exc), EXIT_PROBLEM)
        if result.next_task is not None:
            producer.celery.send_task(f"refunds.{result.next_task}", args=[ref])
        if as_json:
            _print_json(result.record.to_public())
            return
        out.print(f"{ref}: now [bold]{result.record.state}[/]")


_operator_command("approve", "Approve a refund held in awaiting_approval: it goes on to Confirm.")
_operator_command("retry", "Retry a refund in needs_attention from where its provider progress is.")
_operator_command("cancel", "Cancel a refund before Confirm (after Confirm it is MCE's to finish).")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="uvicorn worker processes.",
)
def web(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API and MCE's webhook endpoint (uvicorn; OpenAPI at /openapi.json)."""
    import uvicorn  # noqa: PLC0415

    from refunds.ops.logs import configure  # noqa: PLC0415
    from refunds.web.app import api_key_of  # noqa: PLC0415

    settings = _settings()
    api_key_of(settings)  # refuse to start without a real API key, before binding a port
    configure(settings.log_level, settings.log_json)
    uvicorn.run(
        "refunds.web.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``refunds``; also ``python -m refunds.cli``)."""
    cli.main(args=argv, prog_name="refunds")


