"""News that must not be followed: about another refund, with an invalid amount, or contradicting
a final state. Each becomes a stop for a human or a conflict mark, never an adopted value.

- Identity first. Once the record knows its ``cryptoRefundId``, news naming another id, or naming
  another ``originalTransactionId`` or ``clientReference`` (on any path, the duplicate-reference
  look-up included), is a *mismatch*: ``needs_attention`` with code ``PROVIDER_MISMATCH`` and both
  values in ``last_error``; nothing of the news is adopted.
- A provider amount or fee that is not a finite, non-negative decimal is an *anomaly*:
  ``needs_attention`` with code ``PROVIDER_AMOUNT_INVALID``.
- Final sticky. News that contradicts a final state (completed after cancelled, completed after
  failed, failed after completed, ...) keeps the final state and marks the record with a
  ``conflict`` for a human; older news is *stale* and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from refunds.addresses import ADDRESS_INVALID
from refunds.decisions.plan import (
    INTERNAL_TRANSITION_REFUSED,
    LABEL,
    PROVIDER_AMOUNT_INVALID,
    PROVIDER_MISMATCH,
    STATE_FOR_STATUS,
    STATUS_WORD,
    Decision,
    Source,
)
from refunds.mce.schemas import RefundData
from refunds.models import FINAL_STATES, RefundRecord, State, iso
from refunds.money import within_bounds
from refunds.policy import CONTRADICTION_ENTRY

# Codes of a stop that only a human lifts: later provider news does not move such a record.
HUMAN_STOPS = frozenset({PROVIDER_MISMATCH, PROVIDER_AMOUNT_INVALID, ADDRESS_INVALID})
#: Stops a bulk retry leaves alone unless the operator names their code: each one is evidence a
#: human must look at (another refund, an invalid amount or address, a bug), not an outage.
NOT_BULK_RETRIED = HUMAN_STOPS | {INTERNAL_TRANSITION_REFUSED}


def stopped_for_human(record: RefundRecord) -> bool:
    return bool(record.last_error) and (record.last_error or {}).get("code") in HUMAN_STOPS


def refused(record: RefundRecord, news: RefundData, source: Source, now: float) -> Decision | None:
    """The stop or conflict ``news`` makes of ``record``, or None: the news may be followed."""
    stop = _mismatch(record, news)
    if stop is not None:
        name, ours, theirs = stop
        if record.is_final:
            return _conflict(record, news, source, now, f"{name}_mismatch")
        message = f"provider reported {name} {theirs!r}; this refund's is {ours!r}"
        return Decision(
            "mismatch",
            State.NEEDS_ATTENTION,
            f"mismatch: {name}",
            reason=f"{LABEL[source]}: {PROVIDER_MISMATCH} ({name})",
            fields={
                "last_error": stop_error(
                    PROVIDER_MISMATCH, message, source, field=name, ours=ours, theirs=theirs
                ),
                "attempts": 0,
            },
            timer="clear",
            code=PROVIDER_MISMATCH,
            level=logging.ERROR,
        )
    bad = _bad_money(news)
    if bad:
        if record.is_final:
            return _conflict(record, news, source, now, "amount_invalid")
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(bad.items()))
        return Decision(
            "anomaly",
            State.NEEDS_ATTENTION,
            "invalid provider amount",
            reason=f"{LABEL[source]}: {PROVIDER_AMOUNT_INVALID}",
            fields={
                "last_error": stop_error(
                    PROVIDER_AMOUNT_INVALID,
                    f"provider amount is not a finite, non-negative decimal: {shown}",
                    source,
                    values=bad,
                ),
                "attempts": 0,
            },
            timer="clear",
            code=PROVIDER_AMOUNT_INVALID,
            level=logging.ERROR,
        )
    if record.is_final:
        return _on_final(record, news, source, now)
    return None


def stop_error(code: str, message: str, source: Source, **more: Any) -> dict[str, Any]:
    """A ``last_error`` shaped like ``MceError.as_dict`` plus the details of the stop."""
    return {
        "type": "ProviderNews",
        "message": message,
        "status": None,
        "code": code,
        "logId": None,
        "operation": source,
        **more,
    }


def _mismatch(record: RefundRecord, news: RefundData) -> tuple[str, str, str] | None:
    """(field, ours, theirs) when the news is about another refund than the record's."""
    if news.client_reference and news.client_reference != record.client_reference:
        return "clientReference", record.client_reference, news.client_reference
    if record.crypto_refund_id and news.crypto_refund_id != record.crypto_refund_id:
        return "cryptoRefundId", record.crypto_refund_id, news.crypto_refund_id
    theirs = news.original_transaction_id
    if theirs and theirs != record.original_transaction_id:
        return "originalTransactionId", record.original_transaction_id, theirs
    return None


def _bad_money(news: RefundData) -> dict[str, str]:
    bad = dict(news.invalid_money)
    # is_signed, not < 0: "-0.00" is a negative amount as sent, and no refund of ours is one.
    # Beyond the digit bounds (1E+999999999): no amount, and never written out in plain form.
    for name, value in (("amount", news.amount), ("feeAmount", news.fee_amount)):
        if value is not None and (value.is_signed() or not within_bounds(value)):
            bad[name] = str(value)[:64]
    return bad


def _conflict(
    record: RefundRecord, news: RefundData, source: Source, now: float, kind: str
) -> Decision:
    mark: dict[str, Any] = {
        "kind": kind,
        "providerStatus": news.status,
        "at": iso(now),
        "source": source,
        "cryptoRefundId": news.crypto_refund_id,
    }
    if news.txn_hash:
        mark["txnHash"] = news.txn_hash
    # The merchant was told the final state: it is told of the contradiction too (once per
    # kind of contradiction; a repeat of the same news only refreshes the mark).
    told = (record.conflict or {}).get("kind") == kind
    return Decision(
        "conflict",
        record.state,
        f"conflict: {kind} (kept {record.state})",
        fields={"conflict": mark},
        timer="clear",
        outbox=() if told else (f"{CONTRADICTION_ENTRY}:{record.client_reference}",),
        conflict=mark,
        level=logging.ERROR,
    )


def _on_final(record: RefundRecord, news: RefundData, source: Source, now: float) -> Decision:
    """A final record takes no news; news that contradicts it is marked, older news is stale."""
    status = news.status
    said = STATE_FOR_STATUS.get(status) if status is not None else None
    if record.state == State.CANCELLED:
        # We cancelled before Confirm: "created" or "rejected/cancelled" agrees; anything that
        # says the provider went on (processing, completed, failed) contradicts it.
        agrees = said in (None, State.CREATED, State.REJECTED)
    else:
        agrees = said is None or said == record.state or said not in FINAL_STATES
    if agrees:
        return Decision("stale", record.state, f"already final: {record.state}", write=False)
    return _conflict(record, news, source, now, f"{STATUS_WORD[status or 0]}_after_{record.state}")
