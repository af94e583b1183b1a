"""Domain models: the refund intent a merchant hands over, the states, and the record we keep.

These are the pipeline's own shapes, separate from the provider's wire models in ``refunds.mce``.
State names are a public interface (CLI ``--json``, HTTP API, metrics labels): do not rename them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from refunds import addresses, identifiers
from refunds.errors import FieldError, InvalidIntentError
from refunds.mce.contract import ORIGINAL_TRANSACTION_TYPES
from refunds.money import format_money


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


S = State
FINAL_STATES = frozenset({S.COMPLETED, S.FAILED, S.REJECTED, S.CANCELLED})
_PROVIDER_FINAL = (S.COMPLETED, S.FAILED, S.REJECTED)

# The one table of allowed transitions. A record moves only along these edges; final states have
# no way out. Provider news (a Get or a webhook) may jump ahead (a duplicate Create can answer
# with a refund that is already confirmed or even final), but never backwards.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.RECEIVED: frozenset({S.CREATING, S.CANCELLED, S.NEEDS_ATTENTION}),
    S.CREATING: frozenset(
        {S.CREATED, S.AWAITING_APPROVAL, S.PROCESSING, *_PROVIDER_FINAL, S.NEEDS_ATTENTION}
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
}


def is_allowed(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def _type_enum(schema: dict[str, Any]) -> None:
    """OpenAPI shows the accepted originalTransactionType values (fuzzers then aim right)."""
    schema["enum"] = sorted(ORIGINAL_TRANSACTION_TYPES)


#: A number in scientific notation, as a spreadsheet writes a long number in a General cell: a
#: mantissa (decimal point or comma) and a signed exponent ("9.91214E+15", "9,91214E+15").
EXCEL_NUMBER = re.compile(r"\s*[+-]?\d+(?:[.,]\d+)?[eE][+-]\d+\s*")


class RefundIntent(BaseModel):
    """What a merchant asks for. Field names are the contract's, so batch files read naturally."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    original_transaction_type: int = Field(
        alias="originalTransactionType",
        json_schema_extra=_type_enum,
    )
    # The character sets and why: ``refunds.identifiers`` (refused with the character named).
    original_transaction_id: str = Field(
        alias="originalTransactionId",
        min_length=1,
        max_length=identifiers.TRANSACTION_ID_MAX,
        pattern=identifiers.TRANSACTION_ID_PATTERN,
    )
    client_reference: str = Field(
        alias="clientReference",
        min_length=1,
        max_length=identifiers.REFERENCE_MAX,
        pattern=identifiers.REFERENCE_PATTERN,
    )
    refund_address: str | None = Field(None, alias="refundAddress", max_length=256)

    @field_validator("original_transaction_type", mode="before")
    @classmethod
    def _type_known(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an integer")  # noqa: TRY004 - pydantic wants ValueError
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int) and value not in ORIGINAL_TRANSACTION_TYPES:
            known = ", ".join(f"{k} ({v})" for k, v in ORIGINAL_TRANSACTION_TYPES.items())
            raise ValueError(f"must be one of {known}")
        return value

    @field_validator("original_transaction_id", "client_reference", mode="before")
    @classmethod
    def _identifier_characters(cls, value: Any, info: ValidationInfo) -> Any:
        # Before the pattern, so a refusal names the character and its position (not trimmed:
        # what is accepted is byte for byte what MCE and the ledger get).
        if isinstance(value, str):
            check = (
                identifiers.reference_problem
                if info.field_name == "client_reference"
                else identifiers.transaction_id_problem
            )
            problem = check(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("refund_address", mode="after")
    @classmethod
    def _address_characters(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty address is no address (the provider's default applies)
        problem = addresses.intake_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("original_transaction_id", "client_reference", mode="after")
    @classmethod
    def _not_scientific_notation(cls, value: str) -> str:
        # "9.91214E+15" is what a spreadsheet makes of a long numeric id: the digits are gone, so
        # the refund would name a transaction that does not exist. Refused on every intake path.
        if EXCEL_NUMBER.fullmatch(value):
            raise ValueError(
                f"{value!r} looks like scientific notation (as Excel writes a long number): "
                "the id's digits are lost; send the id as text"
            )
        return value

    def fingerprint(self) -> str:
        """Identifies the content of an intent, so a resubmission can be told from a conflict."""
        # Compared as "same intent" compares: an EVM address in any case is the same address.
        content = {**self.content(), "refundAddress": addresses.comparable(self.refund_address)}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]

    def content(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)

    @classmethod
    def parse(cls, data: Any, line: int | None = None) -> RefundIntent:
        """Validate one intent; raise InvalidIntentError with one FieldError per bad field."""
        if not isinstance(data, dict):
            raise InvalidIntentError([FieldError("intent", "must be an object", line)])
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = []
            for err in exc.errors(include_input=False, include_url=False):
                name = str(err["loc"][0]) if err["loc"] else "intent"
                msg = str(err["msg"]).removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    msg = "unknown field"
                elif err["type"] == "missing":
                    msg = "is required"
                errors.append(FieldError(name, msg, line))
            raise InvalidIntentError(errors) from None


def now() -> float:
    """Wall-clock seconds; the one clock of the ledger and the timers (shared across machines)."""
    return datetime.now(UTC).timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class HistoryEntry:
    at: float
    from_state: str | None
    to_state: str
    reason: str
    actor: str = "pipeline"


@dataclass(frozen=True)
class RefundRecord:
    """One refund as the ledger holds it."""

    client_reference: str
    state: State
    original_transaction_type: int
    original_transaction_id: str
    refund_address: str | None
    fingerprint: str
    created_at: float
    updated_at: float
    version: int
    attempts: int = 0
    polls: int = 0
    crypto_refund_id: str | None = None
    provider_status: int | None = None
    amount: Decimal | None = None
    currency: str | None = None
    blockchain: str | None = None
    fee_amount: Decimal | None = None
    fee_currency: str | None = None
    txn_hash: str | None = None
    participant_code: str | None = None
    last_error: dict[str, Any] | None = None
    key_generation: int = 0  # bumped by an operator's retry: new idempotency keys (see client)
    # The provider's view, beside the merchant's intent (never written over it; principle 7).
    provider_refund_address: str | None = None
    provider_transaction_id: str | None = None
    status_info: str | None = None  # the provider's label for its status, when it sends one
    provider_seen_at: float | None = None  # when the provider's refund id was first recorded
    approved_by: str | None = None
    approved_at: float | None = None
    # What the approval approved ({"amount", "currency", "refundAddress", "blockchain"}, as text):
    # a change of any of them before Confirm holds the refund again (``decisions.holds``).
    approved_terms: dict[str, Any] | None = None
    # Provider news that contradicted a final state: {"kind", "providerStatus", "at", "source",
    # "cryptoRefundId"}; the final state is kept, the mark is for a human (list --conflicts).
    conflict: dict[str, Any] | None = None
    history: tuple[HistoryEntry, ...] = field(default=())

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def intent(self) -> RefundIntent:
        return RefundIntent.model_validate(
            {
                "originalTransactionType": self.original_transaction_type,
                "originalTransactionId": self.original_transaction_id,
                "clientReference": self.client_reference,
                "refundAddress": self.refund_address,
            }
        )

    def differences(self, intent: RefundIntent) -> list[str]:
        """The contract fields in which ``intent`` asks for something else than this record.

        Compared as "same intent" means: byte-exact, but an EVM refund address in any case is
        the same address (``addresses.comparable``). Read from the record's fields, not
        re-validated: a record kept from before a rule was added still compares.
        """
        theirs = {
            "originalTransactionType": self.original_transaction_type,
            "originalTransactionId": self.original_transaction_id,
            "clientReference": self.client_reference,
            "refundAddress": addresses.comparable(self.refund_address),
        }
        ours = {**intent.content(), "refundAddress": addresses.comparable(intent.refund_address)}
        return sorted(k for k in ours if ours[k] != theirs.get(k))

    def to_public(self) -> dict[str, Any]:
        """The record as the CLI's ``--json`` and the HTTP API show it: ``PublicRefund``'s JSON."""
        return PublicRefund.of(self).model_dump(mode="json", by_alias=True)


def _plain_money(value: Decimal) -> str:
    text = format_money(value)
    assert text is not None  # noqa: S101 - None never reaches a serializer of Decimal
    return text


# An amount in the public shape: a Decimal inside, plain decimal notation on the wire.
PublicMoney = Annotated[Decimal, PlainSerializer(_plain_money, return_type=str)]


class PublicHistoryEntry(BaseModel):
    """One transition as the world sees it (``from`` is a keyword, hence the alias)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    at: str | None = Field(description="ISO 8601, UTC, milliseconds")
    from_state: str | None = Field(alias="from")
    to: str
    reason: str
    actor: str


class PublicRefund(BaseModel):
    """The one public shape of a refund record: the HTTP API's ``response_model``, the JSON of
    ``refunds status --json`` (via ``RefundRecord.to_public``) and the fields of the CLI's record
    view, in this order. Keys are camelCase like the contract's; amounts are strings in plain
    decimal notation (``refunds.money.format_money``); times are ISO 8601 UTC strings.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    client_reference: str
    state: State
    original_transaction_type: int
    original_transaction_id: str
    refund_address: str | None
    crypto_refund_id: str | None
    provider_status: int | None
    amount: PublicMoney | None
    currency: str | None
    blockchain: str | None
    fee_amount: PublicMoney | None
    fee_currency: str | None
    txn_hash: str | None
    status_info: str | None
    provider_refund_address: str | None
    provider_original_transaction_id: str | None
    approved_by: str | None
    approved_at: str | None
    conflict: dict[str, Any] | None
    attempts: int
    polls: int
    last_error: dict[str, Any] | None
    created_at: str | None
    updated_at: str | None
    history: list[PublicHistoryEntry]

    @classmethod
    def of(cls, record: RefundRecord) -> PublicRefund:
        return cls(
            client_reference=record.client_reference,
            state=record.state,
            original_transaction_type=record.original_transaction_type,
            original_transaction_id=record.original_transaction_id,
            refund_address=record.refund_address,
            crypto_refund_id=record.crypto_refund_id,
            provider_status=record.provider_status,
            amount=record.amount,
            currency=record.currency,
            blockchain=record.blockchain,
            fee_amount=record.fee_amount,
            fee_currency=record.fee_currency,
            txn_hash=record.txn_hash,
            status_info=record.status_info,
            provider_refund_address=record.provider_refund_address,
            provider_original_transaction_id=record.provider_transaction_id,
            approved_by=record.approved_by,
            approved_at=iso(record.approved_at),
            conflict=record.conflict,
            attempts=record.attempts,
            polls=record.polls,
            last_error=record.last_error,
            created_at=iso(record.created_at),
            updated_at=iso(record.updated_at),
            history=[
                PublicHistoryEntry(
                    at=iso(h.at), from_state=h.from_state, to=h.to_state, reason=h.reason,
                    actor=h.actor,
                )
                for h in record.history
            ],
        )
