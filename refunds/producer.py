"""The producer side: how merchant apps hand over refund intents.

``submit_refund(...)`` validates the intent, writes the ledger record (one Redis round trip, one Lua
script: the record, its state index and its safety-net timer together) and nudges a worker. The
``clientReference`` makes it idempotent: the same intent twice returns the existing record; the
same reference with other content raises ConflictError and changes nothing.

The nudge is a Celery message, the record is the truth: if the publish fails after the record was
stored (broker unreachable, a Redis failover mid-call), the intent is still accepted, so the caller
gets the record, a WARNING is logged with the reference, and the refund's timer is brought due at
once; even if that write fails too, the safety-net timer stored with the record is only
``safety_net_seconds`` out, so the scheduler tick hands the refund out within seconds, not a lease.
The same intent submitted again while it is still ``received`` nudges again.

Batches (``submit_many``) pipeline the Redis work and skip the per-intent nudge: their timers are
due at once, and the scheduler tick hands them out, so a batch costs one round trip in all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from config.celery import make_celery
from config.settings import Settings, get_settings
from refunds.archive.reads import archived_lookup
from refunds.errors import ConflictError, FieldError, InvalidIntentError
from refunds.models import RefundIntent, RefundRecord, State
from refunds.participants.registry import Registry, intake_problem, registry_of
from refunds.store.connection import redis_client
from refunds.store.epoch import EpochWatch, watch
from refunds.store.ledger import Ledger, SubmitResult
from refunds.store.participants import ParticipantPauses

log = logging.getLogger("refunds.producer")


def safety_net_seconds(settings: Settings) -> float:
    """Seconds after a submit at which its timer comes due if the nudge was lost.

    A few tick intervals (at least 2 s, at most the lease): long enough that a delivered nudge's
    create has normally started (so the tick does not hand the same refund out twice), short
    enough that a lost nudge costs seconds.
    """
    return min(settings.lease_seconds, max(2.0, 4 * settings.tick_interval))


@dataclass
class BatchResult:
    created: list[RefundRecord] = field(default_factory=list)
    existing: list[RefundRecord] = field(default_factory=list)
    conflicts: list[ConflictError] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.created) + len(self.existing) + len(self.conflicts)


class Producer:
    """Submits intents to the ledger and the queue. Reuse one per process: it holds a pool."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        ledger: Ledger | None = None,
        celery: Celery | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.ledger = ledger or Ledger(
            redis_client(self.settings), archived=archived_lookup(self.settings)
        )
        self._celery = celery
        # Read at start: a bad registry file is a ConfigError before any intent is taken.
        self.registry: Registry = registry_of(self.settings)

    def check_participant(self, intent: RefundIntent, line: int | None = None) -> None:
        """Refuse (InvalidIntentError) an intent whose participantCode this deployment lacks."""
        problem = intake_problem(self.registry, intent.participant)
        if problem is not None:
            raise InvalidIntentError([FieldError("participantCode", problem, line)])

    @property
    def epoch(self) -> EpochWatch:
        """This process's watch of the ledger's epoch (``refunds.store.epoch``): intake is
        refused while Redis is known to have lost the ledger."""
        return watch(self.ledger.redis, "producer")

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_celery(self.settings)
        return self._celery

    def submit(self, intent: RefundIntent | Mapping[str, Any]) -> RefundRecord:
        """Submit one intent; returns its record (new, or the existing identical one)."""
        return self.submit_intent(intent).record

    def submit_intent(self, intent: RefundIntent | Mapping[str, Any]) -> SubmitResult:
        """Like ``submit``, and also says whether this call created the record."""
        if not isinstance(intent, RefundIntent):
            intent = RefundIntent.parse(dict(intent))
        self.epoch.require_intact()  # LedgerResetError: Redis lost the ledger, nothing written
        self.check_participant(intent)
        result = self.ledger.submit(intent, due_in=safety_net_seconds(self.settings))
        self.ledger.ensure_durable(self.settings)  # NotDurableError: answer "retry"
        if result.created:
            self._count_codes([intent.participant])
        if result.created or result.record.state == State.RECEIVED:
            # New, or a retry of an intent whose create has not happened yet (its nudge may be
            # the one that was lost): nudge a worker.
            self.nudge(intent.client_reference, "create")
        return result

    def nudge(self, ref: str, step: str, fence: int | None = None) -> None:
        """Send the step task ``refunds.{step}`` for ``ref`` (with the dispatch id ``fence`` the
        write before it recorded, if any); a failed publish is logged, never raised.

        The write that asked for the step is already durable, so raising would tell the caller
        it failed when it did not. Instead the timer is brought due now, and the tick hands the
        refund out.
        """
        args: list[object] = [ref] if fence is None else [ref, fence]
        try:
            self.celery.send_task(f"refunds.{step}", args=args)
        except Exception as exc:  # noqa: BLE001 - any publish failure: the timer covers it
            log.warning(
                "could not publish the %s task (%s); the scheduler tick will pick the "
                "refund up from its timer",
                step,
                type(exc).__name__,
                extra={"client_reference": ref, "operation": "publish"},
            )
            try:
                self.ledger.due_soon(ref, 0.0)
            except Exception:  # noqa: BLE001 - the stored safety-net timer is seconds out anyway
                log.warning(
                    "could not bring the timer forward either; it comes due within %g s",
                    safety_net_seconds(self.settings),
                    extra={"client_reference": ref, "operation": "publish"},
                )

    def submit_many(self, intents: Iterable[RefundIntent]) -> BatchResult:
        """Submit validated intents in one pipelined round trip; conflicts are collected.

        A reference repeated within the batch behaves as if submitted twice: the second is
        "existing" when identical and a conflict when not.
        """
        out = BatchResult()
        self.epoch.require_intact()
        intents = list(intents)
        problems = [
            FieldError("participantCode", problem, i)
            for i, intent in enumerate(intents, 1)
            if (problem := intake_problem(self.registry, intent.participant)) is not None
        ]
        if problems:
            raise InvalidIntentError(problems)  # nothing written
        outcomes = self.ledger.submit_many(intents, due_in=0.0)
        created: list[str | None] = []
        self.ledger.ensure_durable(self.settings)
        for outcome in outcomes:
            if isinstance(outcome, ConflictError):
                out.conflicts.append(outcome)
            elif outcome.created:
                out.created.append(outcome.record)
                created.append(outcome.record.participant)
            else:
                out.existing.append(outcome.record)
        self._count_codes(created)
        return out

    def _count_codes(self, codes: list[str | None]) -> None:
        """Count new refunds per participant (a registry file's deployments only: the metric
        ``refunds_participant_submitted_total``); a failed count is logged, never raised (the
        refund is accepted)."""
        if not self.registry.from_file:
            return
        owners = [o for c in codes if (o := self.registry.owner(c)) is not None]
        try:
            ParticipantPauses.of(self.ledger).count_submitted(owners)
        except Exception as exc:  # noqa: BLE001 - a counter must not fail an accepted intake
            log.warning("could not count submitted refunds per participant (%s)", exc)

    def get(self, client_reference: str) -> RefundRecord:
        return self.ledger.get(client_reference)


_default: Producer | None = None


def submit_refund(
    *,
    original_transaction_type: int,
    original_transaction_id: str,
    client_reference: str,
    refund_address: str | None = None,
    producer: Producer | None = None,
) -> RefundRecord:
    """Hand one refund intent to the pipeline. Raises InvalidIntentError or ConflictError."""
    global _default  # noqa: PLW0603 - a lazily built per-process producer
    if producer is None:
        if _default is None:
            _default = Producer()
        producer = _default
    intent = RefundIntent.parse(
        {
            "originalTransactionType": original_transaction_type,
            "originalTransactionId": original_transaction_id,
            "clientReference": client_reference,
            "refundAddress": refund_address,
        }
    )
    return producer.submit(intent)
