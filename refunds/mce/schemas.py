"""Wire models: MCE's JSON as it travels (camelCase, decimal strings), apart from domain models.

Unknown fields are ignored and not-yet-known fields may be empty strings, null or absent
(contract section 2), so every field but the ids is optional and empty strings read as None.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator


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


class RefundData(_Wire):
    """The refund object: ``data`` of Create, Confirm and Get, and of the webhook."""

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

    @field_validator("amount", "fee_amount", mode="before")
    @classmethod
    def _no_floats(cls, value: Any) -> Any:
        # Money arrives as decimal strings; a float would already have lost precision.
        if isinstance(value, float):
            return Decimal(repr(value))
        return value

    def ledger_fields(self) -> dict[str, Any]:
        """Provider fields as the ledger stores them (only those the provider filled in)."""
        values = {
            "crypto_refund_id": self.crypto_refund_id,
            "provider_status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "blockchain": self.blockchain,
            "fee_amount": self.fee_amount,
            "fee_currency": self.fee_currency,
            "txn_hash": self.txn_hash,
            "participant_code": self.participant_code,
            "refund_address": self.refund_address,
            "status_info": self.status_info,
        }
        return {k: v for k, v in values.items() if v is not None}
