"""The refund states and the one table of allowed transitions between them.

State names are a public interface (CLI ``--json``, HTTP API, metrics labels): do not rename them.
Kept apart from the record (``refunds.models``) so that what may move where reads in one sitting.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATES", "TRANSITIONS", "State", "is_allowed"]


class State(StrEnum):
    RECEIVED = "received"
    CREATING = "creating"
    CREATED = "created"
    AWAITING_APPROVAL = "awaiting_approval"
    CONFIRMING = "confirming"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"
    # A rule-made refund (KYT intake) whose Create MCE answered "no pending refund"
    # (CRYPTO_REFUND_NOT_PENDING): nothing to refund, final, never retried.
    NOT_REFUNDABLE = "not_refundable"


S = State
FINAL_STATES = frozenset({S.COMPLETED, S.FAILED, S.REJECTED, S.CANCELLED, S.NOT_REFUNDABLE})
_PROVIDER_FINAL = (S.COMPLETED, S.FAILED, S.REJECTED)

# The one table of allowed transitions. A record moves only along these edges; final states have
# no way out. Provider news (a Get or a webhook) may jump ahead (a duplicate Create can answer
# with a refund that is already confirmed or even final), but never backwards.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.RECEIVED: frozenset({S.CREATING, S.CANCELLED, S.NEEDS_ATTENTION}),
    S.CREATING: frozenset(
        {
            S.CREATED,
            S.AWAITING_APPROVAL,
            S.PROCESSING,
            *_PROVIDER_FINAL,
            S.NEEDS_ATTENTION,
            S.NOT_REFUNDABLE,
        }
    ),
    S.CREATED: frozenset(
        {
            S.CONFIRMING,
            S.AWAITING_APPROVAL,
            S.PROCESSING,
            *_PROVIDER_FINAL,
            S.CANCELLED,
            S.NEEDS_ATTENTION,
        }
    ),
    # A held refund still follows the provider (it is polled slowly): news that it is processing
    # or final is taken, so the ledger never says "awaiting approval" while MCE says otherwise.
    S.AWAITING_APPROVAL: frozenset(
        {S.CONFIRMING, S.PROCESSING, *_PROVIDER_FINAL, S.CANCELLED, S.NEEDS_ATTENTION}
    ),
    # Back to the hold when an approved term changed before the Confirm call (never sent then).
    S.CONFIRMING: frozenset(
        {S.PROCESSING, S.AWAITING_APPROVAL, *_PROVIDER_FINAL, S.NEEDS_ATTENTION}
    ),
    S.PROCESSING: frozenset({*_PROVIDER_FINAL, S.NEEDS_ATTENTION}),
    # An operator's retry puts the refund back where its provider-side progress says it is.
    S.NEEDS_ATTENTION: frozenset(
        {
            S.RECEIVED,
            S.CREATED,
            S.AWAITING_APPROVAL,
            S.CONFIRMING,
            S.PROCESSING,
            *_PROVIDER_FINAL,
            S.CANCELLED,
        }
    ),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.NOT_REFUNDABLE: frozenset(),
}


def is_allowed(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]
