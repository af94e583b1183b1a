"""A rule-made refund's Confirm (which sets where the money goes) waits for a person: always
for action ``propose``, and for ``create`` while ``REFUNDS_KYT_CONFIRM_NEEDS_APPROVAL`` is true
(the default), whatever the amount. Asked by the gate before Confirm (``refunds.decisions.holds``)
on every path there; an approved refund is never held again.
"""

from __future__ import annotations

from refunds.models import RefundRecord

HOLD_REASON = "a rule-made refund: Confirm waits for a person"


def confirm_needs_person(record: RefundRecord, *, create_needs_approval: bool) -> bool:
    """Whether a rule-made refund's Confirm waits for a person (False for any other refund)."""
    if not record.kyt_rule or record.approved_by:
        return False
    return record.kyt_action == "propose" or create_needs_approval
