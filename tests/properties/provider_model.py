"""A model of MCE for the stateful property test: the provider's truth, and the answers it gives.

The model keeps what MCE would hold (each refund's status and the address it was confirmed to)
and counts the calls that *take effect*: a Create that makes a refund, a Confirm that moves one
from created (1) to processing (2). It behaves as the contract allows (``provider-contract.md``
sections 4 and 5): an idempotency key replays its first outcome; a second Create for a reference
either answers the refund already made or ``DUPLICATE_CLIENT_REFERENCE``; confirming a confirmed
refund either answers it or ``CRYPTO_REFUND_ALREADY_CONFIRMED``; an unknown refund is
``CRYPTO_REFUND_NOT_FOUND``.

What it *answers* is scripted by the test, one :class:`Shape` per call: the truth, a lost answer
(the call took effect, the answer never came), a transient or permanent error before any effect,
a 409, a crash of the worker (with or without the effect), a lease that lapses during the call
(another worker runs the refund meanwhile), or a lie (another status, refund id, amount or
reference). Gets by reference never lie about a refund's existence: a pipeline cannot be asked to
survive that (contract section 5: the duplicate-reference answer is what protects it).

The model is the provider the steps talk to (in place of ``MceClient``): the steps, decisions,
ledger and webhooks are the real ones, against a real Redis.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from refunds.errors import (
    MceConflictError,
    MceError,
    McePermanentError,
    MceServerError,
    MceTimeoutError,
)
from refunds.mce.contract import Code
from refunds.mce.schemas import RefundData

#: Kinds of answer a scripted call can give.
KINDS = ("truth", "lost", "transient", "permanent", "conflict409", "crash", "crash_before", "lie")
KEEP = "keep"  # a lie's field that keeps the true value
ABSENT = "absent"  # a lie's field left out of the object


class WorkerCrash(BaseException):
    """The worker dies during the provider call: nothing after the call runs (no outcome write).

    A BaseException, so no ``except Exception`` in the code under test catches it; the step's
    ``finally`` releases its lease, which is what the lease lapsing does a few seconds later.
    """


@dataclass(frozen=True)
class Lie:
    """How a lying answer differs from the truth (``KEEP``: not at all)."""

    status: object = KEEP  # an int (1-5, or unknown), ABSENT, or KEEP
    refund_id: str = KEEP  # "other": an id the provider never made
    amount: str = KEEP  # a decimal string, "-1", "NaN", or KEEP
    reference: str = KEEP  # another clientReference, ABSENT, or KEEP


@dataclass(frozen=True)
class Shape:
    """The answer of one provider call."""

    kind: str = "truth"
    lie: Lie = field(default_factory=Lie)
    lapse: bool = False  # the lease lapses during the call: another worker runs the refund
    # MCE's webhook for the refund arrives while the call is in flight, after its effect and
    # before its answer, telling what this Lie makes of the truth (None: no webhook).
    webhook: Lie | None = None


@dataclass
class Truth:
    """One refund as MCE holds it."""

    refund_id: str
    reference: str
    transaction_id: str
    amount: Decimal
    currency: str
    blockchain: str
    refund_address: str  # the payer's until Confirm names the merchant's
    status: int = 1
    txn_hash: str | None = None
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        """The refund object as MCE answers it now (Create, Confirm, Get, webhook)."""
        data: dict[str, Any] = {
            "cryptoRefundId": self.refund_id,
            "originalTransactionType": 1,
            "originalTransactionId": self.transaction_id,
            "clientReference": self.reference,
            "status": self.status,
            "blockchain": self.blockchain,
            "currency": self.currency,
            "amount": str(self.amount),
            "refundAddress": self.refund_address,
        }
        if self.txn_hash:
            data["txnHash"] = self.txn_hash
        return data

    def snap(self) -> None:
        self.snapshots.append(self.view())


@dataclass
class Payment:
    """What the provider refunds for a payment: its amount, currency and chain."""

    amount: Decimal
    currency: str
    blockchain: str
    payer: str  # where the money came from: MCE's default refund address


@dataclass
class Answered:
    """One call the model answered during a step: the operation and what it gave back."""

    operation: str
    kind: str
    data: dict[str, Any] | None = None
    error: MceError | None = None


class ModelProvider:
    """MCE as the steps see it: ``create``, ``confirm`` and ``get`` with ``MceClient``'s
    signatures, answering from a script of shapes and counting the calls that take effect."""

    def __init__(self, *, echo_duplicates: bool, echo_confirmed: bool) -> None:
        self.echo_duplicates = echo_duplicates  # a second Create answers the refund (else 422)
        self.echo_confirmed = echo_confirmed  # a second Confirm answers the refund (else 422)
        self.payments: dict[str, Payment] = {}  # originalTransactionId -> payment
        self.addresses: dict[str, str | None] = {}  # clientReference -> the merchant's address
        self.refunds: dict[str, Truth] = {}  # cryptoRefundId -> truth
        self.by_reference: dict[str, str] = {}
        self.keys: dict[str, tuple[tuple[Any, ...], dict[str, Any] | MceError]] = {}
        self.effective_creates: Counter[str] = Counter()
        self.effective_confirms: Counter[str] = Counter()
        # A Create under a key never seen, for a reference that already has a refund: at a
        # provider that de-duplicates on the key only, a second refund (create step docstring).
        self.second_create_keys: Counter[str] = Counter()
        self.wrong_addresses: list[tuple[str, str | None, str | None]] = []
        self.script: list[Shape] = []
        self.answered: list[Answered] = []
        self.stepping: str | None = None  # the reference whose step is running
        self.on_lapse: Callable[[], None] | None = None
        self.on_webhook: Callable[[dict[str, Any]], None] | None = None
        self._next_id = 0

    # --- the provider's own life --------------------------------------------------------------

    def progress(self, refund_id: str, status: int) -> None:
        """MCE moves a refund on by itself (the chain completes it, it fails, it is rejected)."""
        truth = self.refunds[refund_id]
        truth.status = status
        if status == 3:
            truth.txn_hash = f"0xhash{refund_id}"
        truth.snap()

    # --- the three calls ----------------------------------------------------------------------

    def create(
        self,
        *,
        original_transaction_type: int,
        original_transaction_id: str,
        client_reference: str,
        key: str,
    ) -> RefundData:
        params = ("create", original_transaction_type, original_transaction_id, client_reference)
        return self._call("create", key, params, lambda: self._create(params, client_reference))

    def confirm(self, *, crypto_refund_id: str, refund_address: str | None, key: str) -> RefundData:
        owner = self.stepping or "?"
        expected = self.addresses.get(owner)
        if refund_address != expected:
            self.wrong_addresses.append((owner, expected, refund_address))
        params = ("confirm", crypto_refund_id, refund_address)
        return self._call(
            "confirm", key, params, lambda: self._confirm(crypto_refund_id, refund_address)
        )

    def get(
        self, *, crypto_refund_id: str | None = None, client_reference: str | None = None
    ) -> RefundData:
        def read() -> dict[str, Any]:
            rid = crypto_refund_id or self.by_reference.get(client_reference or "")
            truth = self.refunds.get(rid or "")
            if truth is None:
                raise McePermanentError(
                    "model: not found", status=404, code=Code.NOT_FOUND, operation="get"
                )
            return truth.view()

        return self._call("get", None, (), read)

    # --- how a call is answered ---------------------------------------------------------------

    def _call(
        self,
        operation: str,
        key: str | None,
        params: tuple[Any, ...],
        perform: Callable[[], dict[str, Any]],
    ) -> RefundData:
        shape = self.script.pop(0) if self.script else Shape()
        if shape.lapse and shape.kind == "truth" and self.on_lapse is not None:
            self.on_lapse()
        failure = _failure_before(shape.kind, operation)
        if failure is not None:
            self.answered.append(Answered(operation, shape.kind, error=failure))
            raise failure
        if shape.kind == "crash_before":
            self.answered.append(Answered(operation, shape.kind))
            raise WorkerCrash(operation)
        try:
            data = self._keyed(key, params, perform)
        except MceError as exc:  # the provider's own business answer (duplicate, not found...)
            self.answered.append(Answered(operation, "truth", error=exc))
            raise
        if shape.webhook is not None and self.on_webhook is not None:
            self.on_webhook(doctored(data, shape.webhook))
        if shape.kind == "crash":
            self.answered.append(Answered(operation, shape.kind))
            raise WorkerCrash(operation)
        if shape.kind == "lost":
            lost = MceTimeoutError("model: answer lost", operation=operation)
            self.answered.append(Answered(operation, shape.kind, error=lost))
            raise lost
        if shape.kind == "lie":
            data = doctored(data, shape.lie)
        self.answered.append(Answered(operation, shape.kind, data=data))
        return RefundData.model_validate(data)

    def _keyed(
        self, key: str | None, params: tuple[Any, ...], perform: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """``perform`` once per idempotency key; a replay answers the first outcome."""
        if key is None:
            return perform()
        if key in self.keys:
            first, outcome = self.keys[key]
            if first != params:
                raise McePermanentError(
                    "model: key reused", status=422, code=Code.IDEMPOTENCY_KEY_REUSED
                )
            if isinstance(outcome, MceError):
                raise outcome
            return copy.deepcopy(outcome)
        try:
            data = perform()
        except MceError as exc:
            self.keys[key] = (params, exc)
            raise
        self.keys[key] = (params, copy.deepcopy(data))
        return data

    def _create(self, params: tuple[Any, ...], reference: str) -> dict[str, Any]:
        if reference in self.by_reference:
            self.second_create_keys[reference] += 1
            truth = self.refunds[self.by_reference[reference]]
            if self.echo_duplicates:
                return truth.view()
            raise McePermanentError(
                "model: duplicate", status=422, code=Code.DUPLICATE_REFERENCE, operation="create"
            )
        payment = self.payments[params[2]]
        self._next_id += 1
        truth = Truth(
            f"cr-{self._next_id}",
            reference,
            params[2],
            payment.amount,
            payment.currency,
            payment.blockchain,
            payment.payer,
        )
        truth.snap()
        self.refunds[truth.refund_id] = truth
        self.by_reference[reference] = truth.refund_id
        self.effective_creates[reference] += 1
        return truth.view()

    def _confirm(self, refund_id: str, address: str | None) -> dict[str, Any]:
        truth = self.refunds.get(refund_id)
        if truth is None:
            raise McePermanentError(
                "model: not found", status=404, code=Code.NOT_FOUND, operation="confirm"
            )
        if truth.status == 1:
            truth.status = 2
            truth.refund_address = address or truth.refund_address
            truth.snap()
            self.effective_confirms[truth.reference] += 1
            return truth.view()
        if truth.status == 5:
            raise McePermanentError(
                "model: not pending", status=422, code=Code.NOT_PENDING, operation="confirm"
            )
        if self.echo_confirmed:
            return truth.view()
        raise McePermanentError(
            "model: already confirmed",
            status=422,
            code=Code.ALREADY_CONFIRMED,
            operation="confirm",
        )


def _failure_before(kind: str, operation: str) -> MceError | None:
    """The error of a call that fails before it takes any effect (None: it goes through)."""
    if kind == "transient":
        return MceServerError("model: 503", status=503, operation=operation)
    if kind == "conflict409":
        return MceConflictError("model: 409", status=409, code="CONFLICT", operation=operation)
    if kind == "permanent":
        return McePermanentError(
            "model: refused", status=422, code="MODEL_REFUSED", operation=operation
        )
    return None


def doctored(data: dict[str, Any], lie: Lie) -> dict[str, Any]:
    told = dict(data)
    for name, value in (
        ("status", lie.status),
        ("cryptoRefundId", lie.refund_id),
        ("amount", lie.amount),
        ("clientReference", lie.reference),
    ):
        if value == KEEP:
            continue
        if value == ABSENT:
            told.pop(name, None)
        elif name == "cryptoRefundId":
            told[name] = f"cr-other-{value}"
        else:
            told[name] = value
    return told
