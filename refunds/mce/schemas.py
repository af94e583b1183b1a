"""Wire models: MCE's JSON as it travels (camelCase, decimal strings), apart from domain models.

Unknown fields are ignored and not-yet-known fields may be empty strings, null or absent
(contract section 2), so every field but the ids is optional and empty strings read as None.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class TokenData(_Wire):
    """A bearer token and its lifetime in seconds (contract section 3)."""

    access_token: str = Field(
        validation_alias=AliasChoices("access_token", "accessToken"), min_length=1
    )
    expires_in: float = Field(validation_alias=AliasChoices("expires_in", "expiresIn"), gt=0)
    token_type: str | None = Field(None, validation_alias=AliasChoices("token_type", "tokenType"))

    @classmethod
    def from_answer(cls, body: Any, default_lifetime: float) -> TokenData:
        """Read a Create Token answer in any of the shapes the contract allows.

        Accepted: OAuth 2.0 at the top level (``access_token``, ``expires_in``, ``token_type``), or
        MCE's envelope ``{"code": 200 | "200", "msg", "data": {...}}`` with the token inside; in
        either place either spelling (``accessToken``/``access_token``, ``expiresIn``/
        ``expires_in``). No lifetime (absent, null or empty) -> ``default_lifetime`` seconds (the
        401 handling covers a provider that revokes earlier). Raises ValueError for anything else
        (no token, an envelope whose code is not success, a lifetime <= 0 or not a number).
        """
        # ValueError, not TypeError, throughout: "not a usable answer" is one condition to callers.
        if not isinstance(body, dict):
            raise ValueError("token answer is not a JSON object")  # noqa: TRY004
        fields: Any
        if "access_token" in body or "accessToken" in body:
            fields = body
        else:
            code = body.get("code")
            if isinstance(code, bool) or code not in (200, "200"):
                raise ValueError("token answer is neither OAuth nor a success envelope")
            fields = body.get("data")
            if not isinstance(fields, dict):
                raise ValueError("token envelope has no data object")
        values = dict(fields)
        lifetime = values.get("expires_in", values.get("expiresIn"))
        if lifetime is None or lifetime == "":
            values.pop("expiresIn", None)
            values["expires_in"] = default_lifetime
        if isinstance(lifetime, bool):
            raise ValueError("token lifetime is not a number")  # noqa: TRY004
        return cls.model_validate(values)


def _money(value: Any) -> Decimal | None:
    """A provider amount as an exact Decimal, or None when it is not a finite decimal number.

    JSON numbers reach us as Decimal already (the client and the webhook parse them from the raw
    text); a float here would already have lost digits, so it is read through ``repr`` only as a
    last resort. Strings are parsed as written: ``"0.00000021"`` keeps its eight places.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


#: The status recorded for a status that is not an integer (``"PROCESSING"``, ``2.5``, ``true``):
#: not one of the contract's, so it is followed as an unknown status (read again, never
#: confirmed), never a parse failure. The text MCE sent is kept in ``status_info``.
UNREADABLE_STATUS = -1


def _integer_status(value: Any) -> int | None:
    """``value`` as an integer status, or None when it is not one (``"2"`` and ``2.0`` are 2)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**10 else None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or number.adjusted() >= 10:  # no status has ten digits
        return None
    return int(number) if number == number.to_integral_value() else None


class RefundData(_Wire):
    """The refund object: ``data`` of Create, Confirm and Get, and of the webhook.

    ``invalid_money`` holds, as text, any amount the provider sent that is not a finite decimal
    (``"abc"``, ``NaN``, ``Infinity``): the refund stops for a human instead of the parse failing.
    """

    crypto_refund_id: str = Field(alias="cryptoRefundId", min_length=1)
    client_reference: str | None = Field(None, alias="clientReference")
    original_transaction_type: int | None = Field(None, alias="originalTransactionType")
    original_transaction_id: str | None = Field(None, alias="originalTransactionId")
    participant_code: str | None = Field(None, alias="participantCode")
    status: int | None = None
    blockchain: str | None = None
    currency: str | None = None
    amount: Decimal | None = None
    refund_address: str | None = Field(None, alias="refundAddress")
    fee_currency: str | None = Field(None, alias="feeCurrency")
    fee_amount: Decimal | None = Field(None, alias="feeAmount")
    txn_hash: str | None = Field(None, alias="txnHash")
    # v2 objects pair status with a label (e.g. 2 PROCESSING); recorded when present (contract 5).
    status_info: str | None = Field(None, alias="statusInfo", max_length=128)
    invalid_money: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _set_aside_bad_money(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        data = dict(value)
        raw_status = data.get("status")
        if raw_status is not None and raw_status != "":
            status = _integer_status(raw_status)
            if status is None:
                data["status"] = UNREADABLE_STATUS
                data.setdefault("statusInfo", f"status {str(raw_status)[:100]!r}")
            else:
                data["status"] = status
        bad: dict[str, str] = {}
        for name in ("amount", "feeAmount"):
            raw = data.get(name)
            if raw is None or raw == "":
                continue
            money = _money(raw)
            if money is None:
                bad[name] = str(raw)[:64]
                data.pop(name)
            else:
                data[name] = money
        data.pop("invalid_money", None)
        if bad:
            data["invalid_money"] = bad
        return data

    def ledger_fields(self) -> dict[str, Any]:
        """The provider's view as the ledger stores it (only what the provider filled in).

        Never the merchant's intent: the provider's ``refundAddress`` and ``originalTransactionId``
        go to fields of their own, beside ``refund_address`` and ``original_transaction_id``.
        """
        values = {
            "crypto_refund_id": self.crypto_refund_id,
            "provider_status": self.status,
            "status_info": self.status_info,
            "amount": self.amount,
            "currency": self.currency,
            "blockchain": self.blockchain,
            "fee_amount": self.fee_amount,
            "fee_currency": self.fee_currency,
            "txn_hash": self.txn_hash,
            "participant_code": self.participant_code,
            "provider_refund_address": self.refund_address,
            "provider_transaction_id": self.original_transaction_id,
        }
        return {k: v for k, v in values.items() if v is not None}
