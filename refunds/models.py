"""Domain models: the refund intent a merchant hands over, the states, and the record we keep.

These are the pipeline's own shapes, separate from the provider's wire models in ``refunds.mce``.
State names are a public interface (CLI ``--json``, HTTP API, metrics labels): do not rename them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Self, get_type_hints

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.alias_generators import to_camel

from refunds import addresses, identifiers
from refunds.errors import FieldError, InvalidIntentError
from refunds.mce.contract import ORIGINAL_TRANSACTION_TYPES
from refunds.money import format_money
from refunds.states import FINAL_STATES, TRANSITIONS, State, is_allowed

# The states and their transition table live in ``refunds.states``; re-exported here, where
# most callers have always found them.
__all__ = [
    "EXCEL_NUMBER", "FINAL_STATES", "PUBLIC_FIELDS", "TRANSITIONS", "HistoryEntry", "PublicRefund",
    "RefundIntent", "RefundRecord", "State", "is_allowed", "iso", "kept", "now"
]


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
    # The participant (merchant) this refund is for, in a PSP deployment (refunds.participants):
    # its credential and participantCode make the provider calls. None: the deployment's default.
    participant: str | None = Field(
        None,
        alias="participantCode",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$",
    )

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

    @field_validator("participant", mode="before")
    @classmethod
    def _blank_participant_is_none(cls, value: Any) -> Any:
        # An empty CSV cell names no participant (the deployment's default), as with addresses.
        return None if isinstance(value, str) and not value.strip() else value

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
        content = self.model_dump(by_alias=True)
        if content["participantCode"] is None:
            del content["participantCode"]  # fingerprints of intents without one stay as before
        return content

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


def kept(stored: str | None, public: str | None = "") -> dict[str, str | None]:
    """A record field's metadata: its Redis hash field (``stored``; None: not a hash field) and
    its name in the public shape (``public``: "" the same name, None not shown).

    Every record field is declared once, in :class:`RefundRecord`, with this metadata; the rest
    derives from there: the store's codec (``refunds.store.codec``: hash field names, decoding by
    the declared type) and :data:`PublicRefund` (names, order, public types).
    """
    return {"stored": stored, "public": public}


@dataclass(frozen=True, kw_only=True)
class RefundRecord:
    """One refund as the ledger holds it. Fields are in the order the world sees them (the
    public shape's order); the ones only the pipeline reads are declared ``public=None``."""

    client_reference: str = field(metadata=kept(None))  # the key, not a hash field
    state: State = field(metadata=kept("state"))
    original_transaction_type: int = field(metadata=kept("type"))
    original_transaction_id: str = field(metadata=kept("txn"))
    refund_address: str | None = field(metadata=kept("addr"))
    fingerprint: str = field(metadata=kept("fp", public=None))  # the intent's content hash
    crypto_refund_id: str | None = field(default=None, metadata=kept("rid"))
    provider_status: int | None = field(default=None, metadata=kept("pstatus"))
    amount: Decimal | None = field(default=None, metadata=kept("amount"))
    currency: str | None = field(default=None, metadata=kept("cur"))
    blockchain: str | None = field(default=None, metadata=kept("chain"))
    fee_amount: Decimal | None = field(default=None, metadata=kept("fee"))
    fee_currency: str | None = field(default=None, metadata=kept("feecur"))
    txn_hash: str | None = field(default=None, metadata=kept("hash"))
    participant_code: str | None = field(default=None, metadata=kept("pcode", public=None))
    # Our participant (intake's participantCode), whose credential and code make every call;
    # participant_code above is what the provider reported. Not in the public shape (its keys
    # are pinned: tests/unit/test_money.py); the participant routes and filters read it.
    participant: str | None = field(default=None, metadata=kept("part", public=None))
    # The provider's view, beside the merchant's intent (never written over it; principle 7).
    # status_info: the provider's label for its status, when it sends one.
    status_info: str | None = field(default=None, metadata=kept("sinfo"))
    provider_refund_address: str | None = field(default=None, metadata=kept("paddr"))
    provider_transaction_id: str | None = field(
        default=None, metadata=kept("ptxn", public="provider_original_transaction_id")
    )
    # When the provider's refund id was first recorded.
    provider_seen_at: float | None = field(default=None, metadata=kept("pseen", public=None))
    approved_by: str | None = field(default=None, metadata=kept("apby"))
    approved_at: float | None = field(default=None, metadata=kept("apat"))
    # What the approval approved ({"amount", "currency", "refundAddress", "blockchain"}, as text):
    # a change of any of them before Confirm holds the refund again (``decisions.holds``).
    approved_terms: dict[str, Any] | None = field(default=None, metadata=kept("apterms"))
    # A rule-made refund (KYT intake, ``refunds.kyt``): the rule that made it and its action
    # (propose, create), the sha256 of the rules file, the payment webhooks it came from, and
    # the payment as they described it (what an approver reads before Confirm).
    kyt_rule: str | None = field(default=None, metadata=kept("krule"))
    kyt_action: str | None = field(default=None, metadata=kept("kact"))
    kyt_rules_hash: str | None = field(default=None, metadata=kept("khash"))
    notification_ids: list[str] | None = field(default=None, metadata=kept("knids"))
    kyt_payment: dict[str, Any] | None = field(default=None, metadata=kept("kpay"))
    # Provider news that contradicted a final state: {"kind", "providerStatus", "at", "source",
    # "cryptoRefundId"}; the final state is kept, the mark is for a human (list --conflicts).
    conflict: dict[str, Any] | None = field(default=None, metadata=kept("conf"))
    attempts: int = field(default=0, metadata=kept("attempts"))
    polls: int = field(default=0, metadata=kept("polls"))
    last_error: dict[str, Any] | None = field(default=None, metadata=kept("err"))
    # Bumped by an operator's retry: new idempotency keys (see the MCE client).
    key_generation: int = field(default=0, metadata=kept("gen", public=None))
    created_at: float = field(metadata=kept("created"))
    updated_at: float = field(metadata=kept("updated"))
    version: int = field(default=0, metadata=kept("ver", public=None))
    history: tuple[HistoryEntry, ...] = field(default=(), metadata=kept(None))  # its own list

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
                "participantCode": self.participant,
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
            "participantCode": self.participant,
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


class PublicShape(BaseModel):
    """What :data:`PublicRefund` derives from: the config and the conversion of a record.

    A record's time (a float, epoch seconds) shows as an ISO 8601 UTC string, an amount in plain
    decimal notation, the history as :class:`PublicHistoryEntry` items; other values as they are.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    @classmethod
    def of(cls, record: RefundRecord) -> Self:
        values = {
            public: _public_value(getattr(record, name)) for name, public in PUBLIC_FIELDS.items()
        }
        return cls.model_validate(values)


def _public_value(value: Any) -> Any:
    if isinstance(value, float):
        return iso(value)
    if isinstance(value, tuple):  # the history
        return [
            PublicHistoryEntry(
                at=iso(h.at), from_state=h.from_state, to=h.to_state, reason=h.reason, actor=h.actor
            )
            for h in value
        ]
    return value


def _public_type(hint: Any) -> Any:
    """The public type of a record field's declared type (see :class:`PublicShape`)."""
    if hint in (float, float | None):
        return str | None
    if hint == Decimal | None:
        return PublicMoney | None
    if hint == tuple[HistoryEntry, ...]:
        return list[PublicHistoryEntry]
    return hint


#: Record attribute -> its name in the public shape, in the public order (the record's).
PUBLIC_FIELDS = {
    f.name: f.metadata["public"] or f.name
    for f in dataclasses.fields(RefundRecord)
    if f.metadata["public"] is not None
}

# The one public shape of a refund record, derived from RefundRecord's declaration (``kept``): a
# field declared there shows here, with its public name and type, in the record's order.
_PUBLIC_REFUND_DOC = """\
The one public shape of a refund record: the HTTP API's ``response_model``, the JSON of
``refunds status --json`` (via ``RefundRecord.to_public``) and the fields of the CLI's record
view, in this order. Keys are camelCase like the contract's; amounts are strings in plain
decimal notation (``refunds.money.format_money``); times are ISO 8601 UTC strings."""

if TYPE_CHECKING:
    PublicRefund = PublicShape
else:
    _hints = get_type_hints(RefundRecord)
    PublicRefund = create_model(
        "PublicRefund",
        __base__=PublicShape,
        __module__=__name__,
        __doc__=_PUBLIC_REFUND_DOC,
        **{public: (_public_type(_hints[name]), ...) for name, public in PUBLIC_FIELDS.items()},
    )
