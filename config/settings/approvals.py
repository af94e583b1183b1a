"""The approval policy's raw values: per-currency amounts above which Confirm waits for a person.

The rule itself is ``refunds.policy.Policy``. Currency codes compare case-insensitively (``usdt``
is USDT), so a currency named twice, in any spelling, is refused at start: with two amounts for one
currency, which one guards the money would depend on the order of a dictionary.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode


def parse_currency_amounts(value: Any) -> Any:
    """``{CURRENCY: amount}`` from ``USDT=1000,BTC=0.05``, a JSON object, or a mapping.

    Keys are stripped and upper-cased. Raises ValueError naming both spellings when a currency
    appears twice (``USDT`` and ``usdt``, or ``USDT`` twice), and for a pair without ``=``.
    Every per-currency setting goes through here.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            pairs: list[tuple[Any, Any]] = json.loads(text, object_pairs_hook=list)
        else:
            split = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(p) != 2 for p in split):
                raise ValueError("use CURRENCY=AMOUNT pairs separated by commas, or JSON")
            pairs = [(k, v.strip()) for k, v in split]
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        return value
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for raw_key, amount in pairs:
        if not isinstance(raw_key, str) or not raw_key.strip():
            raise ValueError("every currency needs a code (CURRENCY=AMOUNT)")
        key = raw_key.strip().upper()
        if key in spelled:
            raise ValueError(
                f"names {key} twice ({spelled[key]!r} and {raw_key.strip()!r}); "
                "currency codes ignore case, so give each currency one amount"
            )
        spelled[key] = raw_key.strip()
        out[key] = amount
    return out


class ApprovalSettings(BaseModel):
    """Amounts that need a person's approval, and how often a held refund is read."""

    approval_thresholds: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=dict,
        validation_alias="REFUNDS_APPROVAL_THRESHOLDS",
        description="CUR=AMOUNT,... or JSON: amounts above which Confirm waits for an "
        "operator's approval; each currency once (codes ignore case)",
    )
    held_poll_seconds: float = Field(
        3600.0,
        gt=0,
        le=86400,
        validation_alias="REFUNDS_HELD_POLL_SECONDS",
        description="how often a refund held for approval is read at the provider, seconds",
    )

    @field_validator("approval_thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: Any) -> Any:
        return parse_currency_amounts(value)

    @field_validator("approval_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if any(v < 0 for v in value.values()):
            raise ValueError("thresholds must not be negative")
        return value
