"""The record codec: a ``RefundRecord`` to the fields of its Redis hash and back.

A record is one hash (``rp:r:{ref}``) plus its history list (``rp:hl:{ref}``); see
``refunds.store.keys``. The field names are short because 100,000 refunds in flight must stay
small; every value is a plain string. Nothing here lists the fields: each is declared once, in
``refunds.models.RefundRecord`` (its ``kept`` metadata names the hash field), and ``FIELDS``, the
decoders and :func:`stored_fields` are built from that declaration, so a field added there is
stored, read back and shown without another edit. The mapping lives apart from the ledger's
scripts because several store modules share it (records, intake, the step lock).

Pure functions, no Redis calls.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, get_args, get_type_hints

from refunds.models import HistoryEntry, RefundIntent, RefundRecord, State

__all__ = ["FIELDS", "decode", "encode", "history_line", "new_record", "stored_fields"]

_MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class _Stored:
    """How one declared record field is read back from its hash field."""

    name: str  # RefundRecord attribute
    stored: str  # hash field
    parse: Callable[[str], Any]
    optional: bool  # ``X | None``: a missing or empty hash field reads as None
    default: Any  # for a missing field that is not optional (_MISSING: the hash must have it)


def _parser(hint: Any) -> tuple[Callable[[str], Any], bool]:
    """The parser of a declared type (``X`` or ``X | None``) and whether it is optional."""
    args = [a for a in get_args(hint) if a is not type(None)]
    optional = type(None) in get_args(hint)
    base = args[0] if optional else hint
    if getattr(base, "__origin__", base) in (dict, list):
        return json.loads, optional
    if base in (str, int, float, Decimal, State):
        return base, optional
    raise TypeError(f"RefundRecord: no hash codec for the declared type {hint!r}")


def _stored_fields() -> tuple[_Stored, ...]:
    hints = get_type_hints(RefundRecord)
    out = []
    for f in dataclasses.fields(RefundRecord):
        if f.metadata["stored"] is None:
            continue
        parse, optional = _parser(hints[f.name])
        out.append(_Stored(f.name, f.metadata["stored"], parse, optional, f.default))
    return tuple(out)


_STORED = _stored_fields()

#: Record fields: RefundRecord attribute -> hash field.
FIELDS = {s.name: s.stored for s in _STORED}


def encode(value: Any) -> str:
    """One hash value: dicts and lists as compact sorted JSON, floats by ``repr`` (exact), else
    ``str``."""
    if isinstance(value, dict | list):
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
    values: dict[str, Any] = {}
    for s in _STORED:
        value = raw.get(s.stored)
        if s.optional:
            values[s.name] = s.parse(value) if value not in (None, "") else None
        elif value is not None:
            values[s.name] = s.parse(value)
        elif s.default is _MISSING:
            raise KeyError(s.stored)
        # else: a field at its default is not stored (see ``stored_fields``)
    history = []
    # A record from before the history had its own key keeps it in the hash (moved on its next
    # transition): read it from there, so an upgrade never shows an empty history.
    for line in [*(hist or raw.get("hist") or "").split("\n"), *lines]:
        if line:
            h = json.loads(line)
            history.append(
                HistoryEntry(h["at"], h["from"], h["to"], h["reason"], h.get("actor", "pipeline"))
            )
    return RefundRecord(client_reference=ref, history=tuple(history), **values)


def stored_fields(record: RefundRecord) -> dict[str, Any]:
    """The hash fields of a new ``record`` (hash field -> value, to :func:`encode`): every
    declared field that is set and not at its declared default (``decode`` gives those back)."""
    out = {}
    for s in _STORED:
        value = getattr(record, s.name)
        if value is not None and (s.default is _MISSING or value != s.default):
            out[s.stored] = value
    return out


def new_record(intent: RefundIntent, at: float) -> RefundRecord:
    """The record ``submit`` writes for a new intent, built without reading it back."""
    return RefundRecord(
        client_reference=intent.client_reference,
        state=State.RECEIVED,
        original_transaction_type=intent.original_transaction_type,
        original_transaction_id=intent.original_transaction_id,
        refund_address=intent.refund_address,
        participant=intent.participant,
        fingerprint=intent.fingerprint(),
        created_at=at,
        updated_at=at,
        version=1,
        history=(HistoryEntry(round(at, 3), None, State.RECEIVED, "submitted"),),
    )
