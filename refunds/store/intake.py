"""Intake: a merchant's intent becomes a record in ``received``, once per reference.

One script per intent (``lua/ledger_submit.lua``) creates the record, its first history line,
its state-set and creation-index entries, its payment-index entry and its safety-net timer, or,
when the reference exists, answers its fingerprint, so a resubmission of the same content is told
from a conflict (different content under the same reference) without a race; or, when another
reference holds the original payment, names it (one payment, one reference). Batches are
pipelined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis

from refunds.errors import ArchiveUnavailableError, ConflictError, PaymentConflictError
from refunds.models import RefundIntent, RefundRecord, State, now
from refunds.store.codec import encode, history_line, new_record, stored_fields
from refunds.store.keys import (
    ALL,
    ARCHIVE_QUEUE,
    ARCHIVED_REFS,
    IN_FLIGHT,
    RECORD_PREFIX,
    TIMERS,
    history_key,
    payment_key,
    record_key,
    state_key,
)
from refunds.store.records import Records
from refunds.store.scripts import Script, ScriptBatch

__all__ = ["ARCHIVED", "ArchivedLookup", "Intake", "SubmitResult"]

#: What the submit script answers for a reference that left Redis for the archive (a tombstone in
#: ``rp:gone``); never a fingerprint (those are hex).
ARCHIVED = "!archived"

#: Reads a record from the SQL archive (``refunds.archive.reads``), None when it is not there.
ArchivedLookup = Callable[[str], "RefundRecord | None"]


@dataclass(frozen=True)
class SubmitResult:
    record: RefundRecord
    created: bool


def _fp(answer: Any) -> str | None:
    """The existing record's fingerprint from the intake script's answer (None: not that)."""
    return answer if isinstance(answer, str) and answer != ARCHIVED else None


def _payment_taken(intent: RefundIntent, answer: Any) -> PaymentConflictError:
    """The intake script's ``{'payment', holder}``: the payment is another reference's."""
    holder = str(answer[1])
    return PaymentConflictError(
        intent.client_reference,
        holder,
        intent.original_transaction_type,
        intent.original_transaction_id,
    )


class Intake:
    """Submitting intents (one, or a batch in one round trip)."""

    def __init__(
        self, client: redis.Redis, records: Records, archived: ArchivedLookup | None = None
    ) -> None:
        self.redis = client
        self.records = records
        self.archived = archived
        self._submit = Script(client, "ledger_submit")

    def _submit_args(
        self, intent: RefundIntent, at: float, due_in: float, extra: Mapping[str, Any] | None = None
    ) -> tuple[list[str], list[str]]:
        ref = intent.client_reference
        # The record's own fields, as the record the caller gets back has them (codec); ``extra``
        # are record fields beyond the intent's (a rule-made refund's origin, refunds.kyt).
        fields = stored_fields(replace(new_record(intent, at), **(extra or {})))
        flat = [encode(x) for kv in fields.items() for x in kv]
        hist = history_line(at, None, State.RECEIVED, "submitted", "pipeline")
        payment = payment_key(intent.original_transaction_type, intent.original_transaction_id)
        keys = [record_key(ref), TIMERS, ALL, state_key(State.RECEIVED), history_key(ref), payment]
        keys += [IN_FLIGHT, ARCHIVE_QUEUE, ARCHIVED_REFS]
        argv = [ref, encode(at), encode(float(due_in)), intent.fingerprint(), hist, RECORD_PREFIX]
        argv += flat
        return keys, argv

    def submit(
        self, intent: RefundIntent, due_in: float, extra: Mapping[str, Any] | None = None
    ) -> SubmitResult:
        """Store a new intent in ``received`` with its timer, or return the existing record.

        ``due_in`` is the safety-net delay: the caller nudges a worker at once, and the timer makes
        the refund come due anyway if that nudge is lost. Raises ConflictError when the reference
        exists with different content, PaymentConflictError when another reference holds the
        original payment. ``extra``: more record fields to write with a new record (never with
        an existing one, and never part of the intent's fingerprint).
        """
        at = now()
        keys, argv = self._submit_args(intent, at, due_in, extra)
        answer = self._submit(keys, argv)
        return self._submit_outcome(intent, answer)

    def submit_many(
        self, intents: list[RefundIntent], due_in: float
    ) -> list[SubmitResult | ConflictError]:
        """Submit a batch in one pipelined round trip; conflicts are returned, not raised.

        New records are built locally instead of read back, so a batch costs two round trips at
        most (the second only for references that existed already).
        """
        at = now()
        batch = ScriptBatch(self.redis)
        for intent in intents:
            batch.add(self._submit, *self._submit_args(intent, at, due_in))
        answers = batch.execute()
        seen = [i.client_reference for i, a in zip(intents, answers, strict=True) if _fp(a)]
        existing = {r.client_reference: r for r in self.records.get_many(seen)} if seen else {}
        results: list[SubmitResult | ConflictError] = []
        for intent, answer in zip(intents, answers, strict=True):
            if answer is None:
                results.append(SubmitResult(new_record(intent, at), created=True))
                continue
            try:
                if answer == ARCHIVED:
                    results.append(self._archived_outcome(intent))
                    continue
                fp = _fp(answer)
                if fp is None:
                    raise _payment_taken(intent, answer)
                results.append(
                    self._existing_outcome(intent, fp, existing[intent.client_reference])
                )
            except ConflictError as exc:
                results.append(exc)
        return results

    def _submit_outcome(self, intent: RefundIntent, answer: Any) -> SubmitResult:
        if answer == ARCHIVED:
            return self._archived_outcome(intent)
        if answer is not None and _fp(answer) is None:
            raise _payment_taken(intent, answer)
        record = self.records.get(intent.client_reference)
        if answer is None:
            return SubmitResult(record, created=True)
        return self._existing_outcome(intent, str(answer), record)

    def _archived_outcome(self, intent: RefundIntent) -> SubmitResult:
        """Intake of a reference that left Redis: the archived record decides (same intent: that
        record; other content: ConflictError), as a record in Redis would."""
        ref = intent.client_reference
        if self.archived is None:
            raise ArchiveUnavailableError(ref, "is not configured in this process")
        record = self.archived(ref)
        if record is None:
            raise ArchiveUnavailableError(ref, "has no record of it")
        return self._existing_outcome(intent, record.fingerprint, record)

    @staticmethod
    def _existing_outcome(
        intent: RefundIntent, existing_fp: str, record: RefundRecord
    ) -> SubmitResult:
        if existing_fp != intent.fingerprint():
            # Compared field by field as "same intent" compares (an EVM address in any case is
            # the same address): a record whose fingerprint was computed another way still
            # answers an identical resubmission with itself.
            diffs = record.differences(intent)
            if diffs:
                raise ConflictError(intent.client_reference, diffs)
        return SubmitResult(record, created=False)
