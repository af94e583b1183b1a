"""``refunds conflicts list`` and ``refunds conflicts ack REF --reason``: contradictions.

MCE's news that contradicts a final state the merchant was told (it completed a refund we
cancelled, or one that failed) keeps the state, marks the record, tells the merchant, and turns
the health probe red until an operator acknowledges it here (``refunds.conflicts``).
"""

from __future__ import annotations

import click

from refunds.cli import common
from refunds.cli.actions import BY_OPTION
from refunds.cli.common import EXIT_PROBLEM, EXIT_USAGE, fail, out, print_json
from refunds.errors import OperatorActionError


@click.group()
def conflicts() -> None:
    """MCE news contradicting a final state: list them, acknowledge one."""


@conflicts.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of the conflicts.")
def list_conflicts(as_json: bool) -> None:
    """The conflicts no operator has acknowledged yet, oldest first."""
    from refunds.conflicts import unacknowledged  # noqa: PLC0415

    found = unacknowledged(common.ledger(common.settings()))
    if as_json:
        print_json(
            [{"clientReference": c.client_reference, "state": c.state, **c.mark} for c in found]
        )
        return
    for c in found:
        out.print(
            f"{c.client_reference}: {c.state}, {c.mark.get('kind')} "
            f"(MCE status {c.mark.get('providerStatus')}, at {c.mark.get('at')})"
        )
    out.print(f"{len(found)} unacknowledged")


@conflicts.command(name="ack")
@click.argument("ref")
@BY_OPTION
@click.option("--reason", required=True, help="What was done about it (kept on the mark).")
@click.option("--json", "as_json", is_flag=True, help="The record as a JSON object.")
def ack(ref: str, actor: str, reason: str, as_json: bool) -> None:
    """Acknowledge REF's conflict: it leaves the list (the mark stays, with who and why)."""
    from refunds.conflicts import acknowledge  # noqa: PLC0415

    if not actor.strip():
        fail("say who you are (--by NAME)", EXIT_USAGE)
    try:
        record = acknowledge(common.ledger(common.settings()), ref, actor=actor, reason=reason)
    except OperatorActionError as exc:
        fail(str(exc), EXIT_PROBLEM)
    if as_json:
        print_json(record.to_public())
        return
    out.print(f"{ref}: conflict acknowledged ({record.state} kept)")
