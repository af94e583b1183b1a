"""Reading the pipeline's state: ``status``, ``list``, ``watch`` and ``stats``. They only read.

(Named ``inspection``, not ``inspect``, so that it never shadows the standard library module.)
"""

from __future__ import annotations

import click

from refunds.archive.reads import RefundFilter
from refunds.cli import common
from refunds.cli.common import EXIT_USAGE, fail, out, print_json
from refunds.cli.progress import RefundView, follow, render_snapshot
from refunds.cli.views import record_view, records_table, stats_view
from refunds.models import State
from refunds.ops.snapshot import gather
from refunds.participants import registry_of


@click.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="The record as a JSON object.")
def status(ref: str, as_json: bool) -> None:
    """Show one refund: its state, provider ids, last error and history."""
    record = common.refunds(common.settings()).get(ref)
    if as_json:
        print_json(record.to_public())
        return
    out.print(record_view(record))


@click.command("list")
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
@click.option(
    "--conflicts", is_flag=True, help="Only refunds whose provider news contradicted a final state."
)
@click.option(
    "--participant", help="Only this participant's refunds (a PSP deployment's participantCode)."
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of records.")
def list_(
    state: str | None, limit: int, conflicts: bool, participant: str | None, as_json: bool
) -> None:
    """List refunds, oldest first, optionally only those in one state (or with a conflict)."""
    settings = common.settings()
    reads = common.refunds(settings)
    ledger = reads.ledger
    wanted = State(state) if state else None
    if participant is not None:
        registry = registry_of(settings)
        if participant not in registry.participants:
            known = ", ".join(registry.codes) or "none"
            fail(f"no participant {participant!r} in the registry (known: {known})", EXIT_USAGE)
        refs = ledger.conflicted() if conflicts else ledger.references(wanted)
        in_state = set(ledger.references(wanted)) if conflicts and wanted else None
        records = [
            r
            for r in ledger.get_many([r for r in refs if in_state is None or r in in_state])
            if registry.owner(r.participant) == participant
        ][: limit or None]
        if as_json:
            print_json([{**r.to_public(), "participantCode": participant} for r in records])
            return
        out.print(records_table(records))
        out.print(f"{len(records)} of participant {participant}")
        return
    if conflicts:
        in_state = set(ledger.references(wanted)) if wanted else None
        refs = [r for r in ledger.conflicted() if in_state is None or r in in_state]
        records = ledger.get_many(refs[: limit or None])
    else:
        # Redis and the archive together, oldest first (reads.page merges them).
        records = reads.page(RefundFilter(state=wanted), limit or 10**9).items
    if as_json:
        print_json([r.to_public() for r in records])
        return
    counts = reads.counts()
    available = counts.get(state, 0) if state else sum(counts.values())
    if conflicts:
        available = ledger.conflict_count()
    out.print(records_table(records))
    out.print(f"{len(records)} of {available}" + (f" in state {state}" if state else ""))


@click.command()
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
    view = RefundView(common.ledger(common.settings()), prefix=refs_prefix)
    title = f"refunds {refs_prefix}*" if refs_prefix else "refunds"
    if once:
        out.print(render_snapshot(view.refresh(), title))
        return
    follow(view, title, interval=interval, console=out)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The snapshot as a JSON object.")
def stats(as_json: bool) -> None:
    """Counts by state, the oldest refund not final, timers, provider errors, calls and tokens.

    Reads the ledger's indexes and the shared counters, never every record: cheap enough to run
    against a ledger of millions of refunds.
    """
    settings = common.settings()
    snapshot = gather(common.refunds(settings).ledger, age_alert_after=settings.age_alert_after)
    if as_json:
        print_json(snapshot.to_public())
        return
    out.print(stats_view(snapshot))
