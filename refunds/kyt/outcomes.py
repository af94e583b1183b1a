"""What the refund steps do differently for a rule-made refund (``record.kyt_rule`` set).

Two rules, each a pure function the steps and the gate before Confirm ask:

- a Create answered "no pending refund" (``CRYPTO_REFUND_NOT_PENDING``) ends a rule-made refund
  in ``not_refundable``: final, never retried. MCE said the payment is not (or no longer) waiting
  for a refund, and the intent was ours, not a merchant's, so there is nobody to ask; a
  merchant's own intent keeps stopping in ``needs_attention`` as before;
- its Confirm (which sets where the money goes) waits for a person: ``refunds.kyt.approval``
  (apart, because the gate before Confirm, ``refunds.decisions.holds``, asks it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from refunds.decisions.plan import Decision
from refunds.mce.contract import Code
from refunds.models import RefundRecord, State

NOT_PENDING_REASON = "create: the provider has no pending refund for this payment"


def not_refundable(
    record: RefundRecord, *, operation: str | None, code: str | None, error: Mapping[str, Any]
) -> Decision | None:
    """The final ``not_refundable`` for a rule-made refund whose Create was answered
    CRYPTO_REFUND_NOT_PENDING; None for anything else (the usual failure rules apply)."""
    if not record.kyt_rule or operation != "create" or code != Code.NOT_PENDING:
        return None
    return Decision(
        "applied",
        State.NOT_REFUNDABLE,
        "not refundable",
        reason=f"{NOT_PENDING_REASON} ({Code.NOT_PENDING})",
        fields={"last_error": dict(error)},
        timer="clear",
        notify=True,
        level=logging.WARNING,
    )
