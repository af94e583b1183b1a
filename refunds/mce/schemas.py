"""Wire models: MCE's JSON as it travels (camelCase, decimal strings), apart from domain models.

Unknown fields are ignored and not-yet-known fields may be empty strings, null or absent
(contract section 2), so every field but the ids is optional and empty strings read as None.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class TokenData(_Wire):
    access_token: str = Field(alias="accessToken", min_length=1)
    expires_in: float = Field(alias="expiresIn", gt=0)


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
        }
        return {k: v for k, v in values.items() if v is not None}
