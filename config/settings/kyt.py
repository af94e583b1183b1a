"""KYT intake: where the rules file is, and how a payment webhook's KYT marker is read.

MCE does not document which payment webhooks carry the KYT result, at which path, nor which
``status``/``statusInfo`` values mean "pending refund" (contract section 7): every one of those
readings is a setting here, with the default we assume, so a correction from MCE is a change of
environment, not of code (``docs/provider-assumptions.md`` lists them). The rules themselves are a
file (``REFUNDS_KYT_RULES_FILE``, ``docs/kyt-rules.md``); without it payment webhooks are stored
and nothing else happens, as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

#: Family name -> eventType prefix (assumed, the v2 pattern ``<domain>.<object>.updated.v2``).
DEFAULT_FAMILIES = {
    "deposit": "crypto.deposit",
    "collection": "crypto.collection",
    "checkout": "crypto.checkout",
}
#: kytResult value -> category (assumed: MetaComp's internal scale runs 1 low to 5 severe, 6
#: pending; the v2 withdrawal example pairs 3 with "High risk - further review required").
DEFAULT_RESULTS = {
    "1": "low",
    "2": "medium",
    "3": "high",
    "4": "very_high",
    "5": "severe",
    "6": "pending",
}
DEFAULT_PENDING_STATUS_INFO = ("PENDING_REFUND", "TO_BE_REFUNDED", "PENDING_REFUND_REQUEST")


def _mapping(value: Any) -> Any:
    """``a=b,c=d`` or a JSON object, keys and values as strings (stripped)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            return {str(k).strip(): str(v).strip() for k, v in json.loads(text).items()}
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("use NAME=VALUE pairs separated by commas, or a JSON object")
        return {k.strip(): v.strip() for k, v in pairs}
    return value


def _words(value: Any) -> Any:
    """A comma-separated list (or a JSON list) of strings, stripped, empties dropped."""
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
        return [str(item).strip() for item in items if str(item).strip()]
    return value


def _path(name: str, default: str, what: str) -> Any:
    return Field(
        default,
        min_length=1,
        validation_alias=name,
        description=f"dotted JSON path of {what} in a payment webhook (assumed)",
    )


class KytSettings(BaseModel):
    """The KYT detector's readings of a payment webhook, and the rules file."""

    kyt_rules_file: Path | None = Field(
        None,
        validation_alias="REFUNDS_KYT_RULES_FILE",
        description="the KYT rules file (TOML, docs/kyt-rules.md), validated at start; unset: "
        "payment webhooks are stored and nothing else",
    )
    kyt_confirm_needs_approval: bool = Field(
        True,
        validation_alias="REFUNDS_KYT_CONFIRM_NEEDS_APPROVAL",
        description="a rule-made refund (action create) waits for a person at Confirm whatever "
        "its amount; action propose always does",
    )
    kyt_families: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_FAMILIES),
        validation_alias="REFUNDS_KYT_FAMILIES",
        description="family=eventType prefix,... (families: deposit, collection, checkout): "
        "which payment webhooks the detector reads (assumed)",
    )
    kyt_results: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_RESULTS),
        validation_alias="REFUNDS_KYT_RESULTS",
        description="kytResult=category,...: an unmapped kytResult is denied and alerts (assumed)",
    )
    kyt_pending_status: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias="REFUNDS_KYT_PENDING_STATUS",
        description="status values (comma-separated) that mean pending refund (assumed: none)",
    )
    kyt_pending_status_info: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_PENDING_STATUS_INFO),
        validation_alias="REFUNDS_KYT_PENDING_STATUS_INFO",
        description="statusInfo values (comma-separated, any case) that mean pending refund "
        "(assumed)",
    )
    kyt_result_path: str = _path("REFUNDS_KYT_RESULT_PATH", "data.kytInfo.kytResult", "kytResult")
    kyt_type_path: str = _path("REFUNDS_KYT_TYPE_PATH", "data.kytInfo.kytType", "kytType")
    kyt_status_path: str = _path("REFUNDS_KYT_STATUS_PATH", "data.status", "the payment status")
    kyt_status_info_path: str = _path(
        "REFUNDS_KYT_STATUS_INFO_PATH", "data.statusInfo", "the status label"
    )
    kyt_transaction_id_path: str = _path(
        "REFUNDS_KYT_TRANSACTION_ID_PATH", "data.transactionId", "the original transaction id"
    )
    kyt_transaction_type_path: str = Field(
        "",
        validation_alias="REFUNDS_KYT_TRANSACTION_TYPE_PATH",
        description="dotted JSON path of the originalTransactionType; empty: from the family "
        "(deposit 1, collection 2, checkout 3) (assumed)",
    )
    kyt_amount_path: str = _path("REFUNDS_KYT_AMOUNT_PATH", "data.amount", "the amount")
    kyt_currency_path: str = _path("REFUNDS_KYT_CURRENCY_PATH", "data.currency", "the currency")
    kyt_blockchain_path: str = _path(
        "REFUNDS_KYT_BLOCKCHAIN_PATH", "data.blockchain", "the blockchain"
    )
    kyt_participant_path: str = _path(
        "REFUNDS_KYT_PARTICIPANT_PATH", "data.participantCode", "the participantCode"
    )

    @field_validator("kyt_families", "kyt_results", mode="before")
    @classmethod
    def _parse_mapping(cls, value: Any) -> Any:
        return _mapping(value)

    @field_validator("kyt_pending_status", "kyt_pending_status_info", mode="before")
    @classmethod
    def _parse_words(cls, value: Any) -> Any:
        return _words(value)

    @field_validator("kyt_families")
    @classmethod
    def _known_families(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(DEFAULT_FAMILIES))
        if unknown:
            raise ValueError(
                f"unknown family {', '.join(unknown)} (known: {', '.join(DEFAULT_FAMILIES)})"
            )
        if any(not prefix for prefix in value.values()):
            raise ValueError("every family needs an eventType prefix")
        return value
