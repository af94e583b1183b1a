"""``refunds notifications dead`` and ``refunds notifications replay``: the dead letters.

An outcome notification that a merchant's endpoint (or the broker) refused for
``REFUNDS_NOTIFY_GIVE_UP_AFTER`` becomes a dead letter: out of the outbox, kept with its attempts,
last error and time (``refunds.store.outbox``). An operator lists them to see what the merchant
missed and why, and replays them once the endpoint is back: each goes back into the outbox, due
at once, with a fresh give-up window, and the scheduler delivers it as usual (at least once, same
``notificationId``).
"""

from __future__ import annotations

import click
from rich.table import Table

from refunds.cli import common
from refunds.cli.common import EXIT_PROBLEM, EXIT_USAGE, fail, out, print_json
from refunds.cli.views import age
from refunds.models import iso
from refunds.store.outbox import Outbox

# The entries a dead letter can be: a channel's outcome, or its contradiction (refunds.notify).
CHANNELS = ("task", "http", "task+contradiction", "http+contradiction")


@click.group()
def notifications() -> None:
    """Outcome notifications to merchant apps that were given up on: list and replay them."""


@notifications.command()
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many, oldest first (0: no limit).",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of dead letters.")
def dead(limit: int, as_json: bool) -> None:
    """List notifications given up on: reference, channel, attempts, last error, when."""
    outbox = Outbox.of(common.ledger(common.settings()))
    letters = outbox.dead_letters(limit or None)
    if as_json:
        print_json(
            [
                {
                    "member": d.member,
                    "clientReference": d.client_reference,
                    "channel": d.channel,
                    "attempts": d.attempts,
                    "lastError": d.error,
                    "firstFailedAt": iso(d.first),
                    "deadAt": iso(d.at),
                }
                for d in letters
            ]
        )
        return
    total = outbox.dead_count()
    if not letters:
        out.print("no dead notifications")
        return
    table = Table(
        "reference",
        "channel",
        "attempts",
        "last error",
        "given up",
        "failing for",
        title=f"dead notifications ({len(letters)} of {total}, oldest first)",
        title_justify="left",
    )
    for d in letters:
        table.add_row(
            d.client_reference,
            d.channel,
            str(d.attempts),
            d.error,
            iso(d.at),
            age(d.at - d.first),
        )
    out.print(table)
    out.print("replay: refunds notifications replay --all | MEMBER (e.g. http:REF) | REF")


@notifications.command()
@click.option("--all", "everything", is_flag=True, help="Every dead letter.")
@click.argument("members", nargs=-1)
def replay(everything: bool, members: tuple[str, ...]) -> None:
    """Put dead notifications back into the outbox, due now.

    MEMBER is ``http:REF`` or ``task:REF`` as ``notifications dead`` lists it, or a bare REF for
    every channel of that refund. Exit 1 if a named one is not a dead letter (the others are
    still replayed).
    """
    if everything == bool(members):
        fail("give either --all or one or more MEMBERs", EXIT_USAGE)
    outbox = Outbox.of(common.ledger(common.settings()))
    if everything:
        wanted = outbox.dead()
    else:
        wanted = []
        for m in members:
            if m.partition(":")[0] in CHANNELS and ":" in m:
                wanted.append(m)
            else:
                wanted.extend(f"{c}:{m}" for c in CHANNELS)
    moved = outbox.replay(wanted)
    for m in moved:
        out.print(f"replayed {m}")
    out.print(f"{len(moved)} replayed, {outbox.dead_count()} dead left")
    if not everything:
        missing = [
            m
            for m in members
            if m not in moved and not any(x.partition(":")[2] == m for x in moved)
        ]
        if missing:
            fail(f"not dead notifications: {', '.join(missing)}", EXIT_PROBLEM)
