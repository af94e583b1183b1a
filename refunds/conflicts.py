"""Contradictions: MCE's news that contradicts a final state we told the merchant, until an
operator acknowledges it.

The decision that meets such news (``refunds.decisions.stops``) keeps the final state, marks the
record with a ``conflict`` (kind, MCE's status, refund id, transaction hash), lists it among the
conflicted refunds, counts it by kind (``refunds_conflicts_total``) and queues a
``refund.contradiction`` notification to the merchant (``refunds.notify``). A listed conflict
turns the health probe red (``python -m refunds.ops.health``) and shows in
``refunds_conflicts_unacknowledged`` until an operator acknowledges it here, with who and why:
the mark stays on the record as evidence, with the acknowledgement added to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from refunds.errors import OperatorActionError, TransitionError
from refunds.models import RefundRecord, iso, now
from refunds.store.ledger import Ledger


@dataclass(frozen=True)
class Conflict:
    """One listed (unacknowledged) conflict: the reference and its mark."""

    client_reference: str
    state: str
    mark: dict[str, object]


def unacknowledged(ledger: Ledger) -> list[Conflict]:
    """The refunds whose conflict no one has acknowledged yet, oldest first."""
    found = []
    for record in ledger.get_many(ledger.conflicted()):
        found.append(Conflict(record.client_reference, str(record.state), record.conflict or {}))
    return found


def acknowledge(ledger: Ledger, ref: str, *, actor: str, reason: str) -> RefundRecord:
    """An operator has looked at ``ref``'s contradiction: the mark gets ``acknowledgedBy``,
    ``acknowledgedAt`` and ``acknowledgedReason`` and the refund leaves the conflict list (the
    health probe turns green when none is left). Raises OperatorActionError when ``ref`` has no
    conflict to acknowledge, or a word is missing."""
    if not actor.strip():
        raise OperatorActionError(ref, "acknowledge", "say who you are (--by)")
    if not reason.strip():
        raise OperatorActionError(ref, "acknowledge", "say why (--reason); it is kept on the mark")
    record = ledger.get(ref)
    mark = record.conflict
    listed = ref in set(ledger.conflicted())
    if not mark or not listed:
        why = "it has no conflict" if not mark else "its conflict is already acknowledged"
        raise OperatorActionError(ref, "acknowledge", why)
    acked = {
        **mark,
        "acknowledgedBy": actor.strip(),
        "acknowledgedAt": iso(now()),
        "acknowledgedReason": reason.strip(),
    }
    try:
        written = ledger.write(
            record, record.state, "", fields={"conflict": acked}, actor=actor, history=True
        )
    except TransitionError as exc:
        raise OperatorActionError(
            ref, "acknowledge", f"it changed meanwhile ({exc.why}); look again"
        ) from None
    # Unlisted after the mark says so: a crash in between leaves it listed, never hidden.
    ledger.unflag_conflict(ref)
    return written.record
