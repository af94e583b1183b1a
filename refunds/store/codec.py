"""The record codec: a ``RefundRecord`` to the fields of its Redis hash and back.

A record is one hash (``rp:r:{ref}``) plus its history list (``rp:hl:{ref}``); see
``refunds.store.keys``. The field names are short (``FIELDS``) because 100,000 refunds in flight
must stay small; every value is a plain string. The mapping lives apart from the ledger's
scripts because two modules share it: the ledger (submit, reads, transitions) and the step lock
(``refunds.store.locks``, which reads the record in the round trip that takes it).

Pure functions, no Redis calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from refunds.models import HistoryEntry, RefundIntent, RefundRecord, State

__all__ = ["FIELDS", "decode", "encode", "history_line", "new_record"]

# Record fields: RefundRecord attribute -> hash field.
FIELDS = {
    "state": "state",
    "original_transaction_type": "type",
    "original_transaction_id": "txn",
    "refund_address": "addr",
    "fingerprint": "fp",
    "created_at": "created",
    "updated_at": "updated",
    "version": "ver",
    "attempts": "attempts",
    "polls": "polls",
    "crypto_refund_id": "rid",
    "provider_status": "pstatus",
    "amount": "amount",
    "currency": "cur",
    "blockchain": "chain",
    "fee_amount": "fee",
    "fee_currency": "feecur",
    "txn_hash": "hash",
    "participant_code": "pcode",
    "status_info": "sinfo",
    "last_error": "err",
    "key_generation": "gen",
    "provider_refund_address": "paddr",
    "provider_transaction_id": "ptxn",
    "provider_seen_at": "pseen",
    "approved_by": "apby",
    "approved_at": "apat",
    "approved_terms": "apterms",
    "conflict": "conf",
}


def encode(value: Any) -> str:
    """One hash value: dicts as compact sorted JSON, floats by ``repr`` (exact), else ``str``."""
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def history_line(at: float, from_state: str | None, to_state: str, reason: str, actor: str) -> str:
    """One history line (compact JSON, ``at`` in epoch seconds to the ms); the actor only when
    it is not the pipeline."""
    entry = {"at": round(at, 3), "from": from_state, "to": to_state, "reason": reason}
    if actor != "pipeline":
        entry["actor"] = actor
    return json.dumps(entry, separators=(",", ":"))


def decode(
    ref: str, raw: Mapping[str, str], hist: str | None, lines: Sequence[str] = ()
) -> RefundRecord:
    """The record ``ref`` from its hash ``raw`` (HGETALL, non-empty), the legacy history string
    ``hist`` (``rp:h:{ref}``, None: none) and the history list's ``lines`` (``rp:hl:{ref}``,
    LRANGE), oldest first. Raises KeyError/ValueError on a hash that is not a record."""

    def opt(name: str) -> str | None:
        value = raw.get(FIELDS[name])
        return value if value not in (None, "") else None

    def opt_dec(name: str) -> Decimal | None:
        value = opt(name)
        return Decimal(value) if value is not None else None

    history = []
    # A record from before the history had its own key keeps it in the hash (moved on its next
    # transition): read it from there, so an upgrade never shows an empty history.
    for line in [*(hist or raw.get("hist") or "").split("\n"), *lines]:
        if line:
            h = json.loads(line)
            history.append(
                HistoryEntry(h["at"], h["from"], h["to"], h["reason"], h.get("actor", "pipeline"))
            )
    err = opt("last_error")
    conf = opt("conflict")
    terms = opt("approved_terms")
    pstatus = opt("provider_status")
    seen, approved_at = opt("provider_seen_at"), opt("approved_at")
    return RefundRecord(
        client_reference=ref,
        state=State(raw["state"]),
        original_transaction_type=int(raw["type"]),
        original_transaction_id=raw["txn"],
        refund_address=opt("refund_address"),
        fingerprint=raw["fp"],
        created_at=float(raw["created"]),
        updated_at=float(raw["updated"]),
        version=int(raw.get("ver", 0)),
        attempts=int(raw.get("attempts", 0)),
        polls=int(raw.get("polls", 0)),
        crypto_refund_id=opt("crypto_refund_id"),
        provider_status=int(pstatus) if pstatus is not None else None,
        amount=opt_dec("amount"),
        currency=opt("currency"),
        blockchain=opt("blockchain"),
        fee_amount=opt_dec("fee_amount"),
        fee_currency=opt("fee_currency"),
        txn_hash=opt("txn_hash"),
        participant_code=opt("participant_code"),
        status_info=opt("status_info"),
        last_error=json.loads(err) if err else None,
        key_generation=int(raw.get("gen", 0)),
        provider_refund_address=opt("provider_refund_address"),
        provider_transaction_id=opt("provider_transaction_id"),
        provider_seen_at=float(seen) if seen is not None else None,
        approved_by=opt("approved_by"),
        approved_at=float(approved_at) if approved_at is not None else None,
        approved_terms=json.loads(terms) if terms else None,
        conflict=json.loads(conf) if conf else None,
        history=tuple(history),
    )


def new_record(intent: RefundIntent, at: float) -> RefundRecord:
    """The record ``submit`` writes for a new intent, built without reading it back."""
    return RefundRecord(
        client_reference=intent.client_reference,
        state=State.RECEIVED,
        original_transaction_type=intent.original_transaction_type,
        original_transaction_id=intent.original_transaction_id,
        refund_address=intent.refund_address,
        fingerprint=intent.fingerprint(),
        created_at=at,
        updated_at=at,
        version=1,
        history=(HistoryEntry(round(at, 3), None, State.RECEIVED, "submitted"),),
    )
