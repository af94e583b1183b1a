"""``refunds participant list|pause|resume``: one participant's provider calls, stopped and
restarted by an operator.

A paused participant's refunds keep their place: each step that comes due finds the pause,
sends nothing, and goes back on its timer (``REFUNDS_PARTICIPANT_HOLD_SECONDS``) without counting
an attempt; ``resume`` lets the next one through. Other participants, on the same credential or
another, are not touched. The participant must be in the registry (``REFUNDS_REGISTRY_FILE``, or
``MCE_PARTICIPANT_CODE`` without one).
"""

from __future__ import annotations

import click
from rich.table import Table

from refunds.cli import common
from refunds.cli.actions import BY_OPTION
from refunds.cli.common import EXIT_PROBLEM, EXIT_USAGE, fail, out, print_json
from refunds.models import iso, now
from refunds.participants import Registry, registry_of
from refunds.store.participants import ParticipantPauses


@click.group()
def participant() -> None:
    """A PSP deployment's participants: list them, pause or resume one's provider calls."""


def _known(registry: Registry, code: str) -> None:
    if code not in registry.participants:
        known = ", ".join(registry.codes) or "none (set REFUNDS_REGISTRY_FILE)"
        fail(f"no participant {code!r} in the registry (known: {known})", EXIT_USAGE)


@participant.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of participants.")
def list_participants(as_json: bool) -> None:
    """Every participant: its credential, whether enabled, refunds submitted for it (with a
    registry file), whether paused (by whom, why)."""
    settings = common.settings()
    registry = registry_of(settings)
    store = ParticipantPauses.of(common.ledger(settings))
    paused, submitted = store.all(), store.submitted()
    rows = [
        {
            "participantCode": code,
            "credential": part.credential,
            "enabled": part.enabled,
            "submitted": submitted.get(code, 0),
            "paused": code in paused,
            "pausedAt": iso(paused[code]["at"]) if code in paused else None,
            "pausedBy": paused[code]["by"] if code in paused else None,
            "reason": paused[code]["reason"] if code in paused else None,
        }
        for code in registry.codes
        for part in (registry.participants[code],)
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("participant", "credential", "enabled", "submitted", "paused", "by", "reason")
    for row in rows:
        table.add_row(
            str(row["participantCode"]),
            str(row["credential"] or "(MCE_*)"),
            "yes" if row["enabled"] else "no",
            str(row["submitted"]),
            str(row["pausedAt"] or "no"),
            str(row["pausedBy"] or ""),
            str(row["reason"] or ""),
        )
    out.print(table)


@participant.command()
@click.argument("code")
@BY_OPTION
@click.option("--reason", required=True, help="Why (shown by `refunds participant list`).")
def pause(code: str, actor: str, reason: str) -> None:
    """Stop participant CODE's provider calls; its refunds wait on their timers."""
    settings = common.settings()
    _known(registry_of(settings), code)
    if not actor.strip():
        fail("say who you are (--by NAME)", EXIT_USAGE)
    if not ParticipantPauses.of(common.ledger(settings)).pause(code, actor, reason, now()):
        fail(f"participant {code} is paused already", EXIT_PROBLEM)
    click.echo(f"participant {code} paused: its refunds wait until `refunds participant resume`")


@participant.command()
@click.argument("code")
def resume(code: str) -> None:
    """Let participant CODE's provider calls go again; its waiting refunds carry on."""
    settings = common.settings()
    _known(registry_of(settings), code)
    if not ParticipantPauses.of(common.ledger(settings)).resume(code):
        fail(f"participant {code} is not paused", EXIT_PROBLEM)
    click.echo(f"participant {code} resumed")
