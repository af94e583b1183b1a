"""The detector: reads a payment webhook's KYT marker, by the paths the settings give.

MCE does not document which payment webhooks carry ``kytInfo``, at which path, or which status
means "pending refund" (contract section 7), so nothing here names a field: every reading comes
from :class:`Readings`, built from the ``REFUNDS_KYT_*`` settings (``config/settings/kyt.py``),
whose defaults are our assumptions (``docs/provider-assumptions.md``). Pure: the receiver and the
backtest read a stored body through the same function, so both see the same payment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from config.settings.kyt import KytSettings
from refunds.identifiers import TRANSACTION_ID_MAX, transaction_id_problem
from refunds.mce.contract import ORIGINAL_TRANSACTION_TYPES
from refunds.policy import exact_amount

#: The contract's originalTransactionType of each family (assumed, contract section 5).
FAMILY_TYPES = {"deposit": 1, "collection": 2, "checkout": 3}
#: The category of a kytResult the settings do not map (or a webhook without one).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Readings:
    """Where the detector looks, from the settings (see ``config.settings.kyt``)."""

    families: Mapping[str, str]  # family -> eventType prefix
    results: Mapping[str, str]  # kytResult as text -> category
    pending_status: frozenset[str]
    pending_status_info: frozenset[str]  # upper case
    paths: Mapping[str, str]  # what -> dotted path ("" : not read)

    @classmethod
    def from_settings(cls, s: KytSettings) -> Readings:
        return cls(
            families=dict(s.kyt_families),
            results=dict(s.kyt_results),
            pending_status=frozenset(s.kyt_pending_status),
            pending_status_info=frozenset(v.upper() for v in s.kyt_pending_status_info),
            paths={
                "kytResult": s.kyt_result_path,
                "kytType": s.kyt_type_path,
                "status": s.kyt_status_path,
                "statusInfo": s.kyt_status_info_path,
                "transactionId": s.kyt_transaction_id_path,
                "transactionType": s.kyt_transaction_type_path,
                "amount": s.kyt_amount_path,
                "currency": s.kyt_currency_path,
                "blockchain": s.kyt_blockchain_path,
                "participantCode": s.kyt_participant_path,
            },
        )


@dataclass(frozen=True)
class Payment:
    """One flagged (or not) payment as a payment webhook describes it.

    ``kyt_result``/``kyt_type`` are the raw values as text (None: absent); ``category`` is the
    mapped kytResult (:data:`UNKNOWN` when unmapped or absent). ``problems`` names what could not
    be read (a missing transaction id makes the payment unusable for a refund).
    """

    notification_id: str
    family: str
    event_type: str
    transaction_type: int | None
    transaction_id: str | None
    pending: bool
    kyt_result: str | None
    kyt_type: str | None
    category: str
    amount: Decimal | None = None
    currency: str | None = None
    blockchain: str | None = None
    participant: str | None = None
    status: str | None = None
    status_info: str | None = None
    problems: tuple[str, ...] = field(default=())

    def details(self) -> dict[str, Any]:
        """The payment as an approver reads it (and the record keeps it): plain JSON values."""
        out: dict[str, Any] = {
            "family": self.family,
            "originalTransactionType": self.transaction_type,
            "originalTransactionId": self.transaction_id,
            "amount": None if self.amount is None else str(self.amount),
            "currency": self.currency,
            "blockchain": self.blockchain,
            "participantCode": self.participant,
            "kytResult": self.kyt_result,
            "kytType": self.kyt_type,
            "kytCategory": self.category,
            "status": self.status,
            "statusInfo": self.status_info,
        }
        return {k: v for k, v in out.items() if v is not None}


def family_of(readings: Readings, event_type: str) -> str | None:
    """The payment family an eventType belongs to (its configured prefix), or None."""
    for family, prefix in readings.families.items():
        if event_type == prefix or event_type.startswith(prefix + "."):
            return family
    return None


def at_path(event: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``data.kytInfo.kytResult``), or None."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value: Any) -> str | None:
    """A scalar as text (``3`` and ``"3"`` read alike; a Decimal without exponent); else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int | str):
        text = str(value).strip()
        return text or None
    return None


def detect(readings: Readings, event: Mapping[str, Any]) -> Payment | None:
    """The payment a parsed webhook body describes, or None when it is not a payment webhook of
    a configured family (a refund webhook, another event)."""
    event_type = event.get("eventType")
    nid = event.get("notificationId")
    if not isinstance(event_type, str) or not isinstance(nid, str):
        return None
    family = family_of(readings, event_type)
    if family is None:
        return None
    paths = readings.paths

    def read(what: str) -> Any:
        return at_path(event, paths[what]) if paths.get(what) else None

    problems = []
    txn_type: int | None = FAMILY_TYPES[family]
    if paths.get("transactionType"):
        raw_type = _text(read("transactionType"))
        txn_type = int(raw_type) if raw_type and raw_type.isdigit() else None
        if txn_type is None:
            problems.append(
                f"originalTransactionType: nothing usable at {paths['transactionType']}"
            )
    txn_id = _text(read("transactionId"))
    if txn_id is None:
        problems.append(f"originalTransactionId: nothing at {paths['transactionId']}")
    elif len(txn_id) > TRANSACTION_ID_MAX or transaction_id_problem(txn_id):
        why = transaction_id_problem(txn_id) or f"longer than {TRANSACTION_ID_MAX} characters"
        problems.append(f"originalTransactionId: {why}")
    if txn_type is not None and txn_type not in ORIGINAL_TRANSACTION_TYPES:
        problems.append(f"originalTransactionType: {txn_type} is not a known type")
    raw_amount = read("amount")
    amount = exact_amount(raw_amount)
    if raw_amount is not None and amount is None:
        problems.append(f"amount: {raw_amount!r} is not an exact decimal")
    status, status_info = _text(read("status")), _text(read("statusInfo"))
    pending = (status is not None and status in readings.pending_status) or (
        status_info is not None and status_info.upper() in readings.pending_status_info
    )
    kyt_result = _text(read("kytResult"))
    category = readings.results.get(kyt_result, UNKNOWN) if kyt_result else UNKNOWN
    return Payment(
        notification_id=nid,
        family=family,
        event_type=event_type,
        transaction_type=txn_type,
        transaction_id=txn_id,
        pending=pending,
        kyt_result=kyt_result,
        kyt_type=_text(read("kytType")),
        category=category,
        amount=amount,
        currency=_text(read("currency")),
        blockchain=_text(read("blockchain")),
        participant=_text(read("participantCode")),
        status=status,
        status_info=status_info,
        problems=tuple(problems),
    )


def parse_body(body: str | bytes) -> dict[str, Any] | None:
    """A stored body as the receiver parsed it (numbers as exact Decimals), or None."""
    try:
        event = json.loads(body, parse_float=Decimal, parse_constant=Decimal)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None
