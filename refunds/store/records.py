"""The records: one Redis hash per refund, read, and moved by atomic compare-and-set writes.

The ledger is the truth; Celery messages are only nudges. Every change of a record goes through
:meth:`Records.write` (``transition`` and ``transition_dispatch`` are its common forms), one Lua
compare-and-set (``lua/ledger_transition.lua``): it applies only if the record is still in the
state the caller read, so two workers (a redelivered message, a webhook and a poll) can never both
move the same refund. The allowed edges are checked against ``models.TRANSITIONS`` before the
script runs; the script's state check makes that decision atomic. The same script keeps the state
sets, the timer, the outbox and the cryptoRefundId index in step with the record.

The history lives in a list of its own (one RPUSH per write, never read by a step) so the hash
stays a compact listpack (Redis converts a hash to a table, about twice the memory, once any value
exceeds 64 bytes). ``refunds.store.codec`` maps a record to its hash fields and back.

Round trips: a step costs two scripts, whatever it writes. Taking the lease reads the record and
begins the step's attempt (``store.locks``); :meth:`Records.write` records the outcome (CAS,
fields, history, state sets, timer, outbox, a dispatch id), may begin the next step in the same
script (``then``), and releases the lease and looks for parked webhooks (``release``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from refunds.errors import RefundNotFoundError, TransitionError
from refunds.models import FINAL_STATES, RefundRecord, State, is_allowed, now
from refunds.store.codec import FIELDS, decode, encode, history_line
from refunds.store.inflight import index_change
from refunds.store.keys import (
    ARCHIVE_QUEUE,
    CONFLICTS,
    IN_FLIGHT,
    OUTBOX,
    TIMERS,
    history_key,
    legacy_history_key,
    parked_key,
    record_key,
    refund_id_key,
    state_key,
)
from refunds.store.locks import StepLock
from refunds.store.scripts import Script

__all__ = ["Edge", "Records", "TimerAction", "Written"]

TimerAction = Literal["keep", "set", "clear"]


@dataclass(frozen=True)
class Written:
    """What one :meth:`Records.write` wrote: the record as written (its ``history`` only when
    asked for), its dispatch id (``fence``: the one a nudge sent after a dispatching write must
    carry) and, when the write released a step lock, whether webhooks are parked for the refund
    (None: not asked)."""

    record: RefundRecord
    fence: int
    parked: bool | None


#: One more edge written by the same script after the first (see :meth:`Records.write`):
#: target state, history reason, fields.
Edge = tuple[State, str, Mapping[str, Any]]


class Records:
    """Reading one or many records by reference, and writing them."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._transition = Script(client, "ledger_transition")

    # --- reading --------------------------------------------------------------------------------

    def _read(self, pipe: Any, ref: str) -> None:
        """Queue the three reads of one record: hash, legacy history string, history list."""
        pipe.hgetall(record_key(ref))
        pipe.get(legacy_history_key(ref))
        pipe.lrange(history_key(ref), 0, -1)

    def find(self, ref: str) -> RefundRecord | None:
        pipe = self.redis.pipeline(transaction=False)
        self._read(pipe, ref)
        raw, hist, lines = pipe.execute()
        return decode(ref, cast(dict[str, str], raw), hist, lines) if raw else None

    def get(self, ref: str) -> RefundRecord:
        record = self.find(ref)
        if record is None:
            raise RefundNotFoundError(ref)
        return record

    def get_many(self, refs: Iterable[str], chunk: int = 500) -> list[RefundRecord]:
        """Records in the order of ``refs`` (missing ones skipped), in pipelined chunks."""
        refs = list(refs)
        records = []
        for start in range(0, len(refs), chunk):
            part = refs[start : start + chunk]
            pipe = self.redis.pipeline(transaction=False)
            for ref in part:
                self._read(pipe, ref)
            answers = pipe.execute()
            records += [
                decode(r, raw, hist, lines)
                for r, raw, hist, lines in zip(
                    part, answers[::3], answers[1::3], answers[2::3], strict=True
                )
                if raw
            ]
        return records

    def states_of(self, refs: list[str]) -> list[str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            pipe.hget(record_key(ref), "state")
        return list(pipe.execute())

    def flag_conflict(self, ref: str) -> None:
        """List ``ref`` among the conflicted refunds (before its record is marked, so a crash in
        between lists a record without a mark rather than hiding a mark)."""
        self.redis.sadd(CONFLICTS, ref)

    def unflag_conflict(self, ref: str) -> None:
        """Take ``ref`` off the conflicted refunds (an operator acknowledged its conflict; the
        mark stays on the record)."""
        self.redis.srem(CONFLICTS, ref)

    # --- changing -------------------------------------------------------------------------------

    def transition(
        self,
        record: RefundRecord,
        target: State,
        reason: str,
        *,
        fields: Mapping[str, Any] | None = None,
        timer: TimerAction = "keep",
        due: float | None = None,
        due_in: float | None = None,
        actor: str = "pipeline",
        outbox: Sequence[str] = (),
    ) -> RefundRecord:
        """Move ``record`` to ``target`` if it is still in the state it was read in.

        (See :meth:`transition_dispatch` for a transition whose caller sends the next step, and
        :meth:`write` for a step's writes.)

        ``target == record.state`` updates fields without a transition (attempt counters, provider
        fields, the next due time) and adds no history line. ``fields`` maps RefundRecord attribute
        names to values; None deletes the field. Raises TransitionError when the edge is not in the
        table or another writer moved the record first; returns the new record (with its history)
        otherwise. ``outbox`` members are queued for delivery in the same atomic step
        (notifications of a final outcome must not be lost to a crash between the transition and
        the queueing). ``due_in`` (seconds) is the next due time relative to Redis TIME, taken
        inside the script (one clock for every host); ``due`` (epoch seconds) is an absolute one.
        """
        return self.write(
            record,
            target,
            reason,
            fields=fields,
            timer=timer,
            due=due,
            due_in=due_in,
            actor=actor,
            outbox=outbox,
            history=True,
        ).record

    def transition_dispatch(
        self, /, record: RefundRecord, target: State, reason: str, **kwargs: Any
    ) -> tuple[RefundRecord, int]:
        """:meth:`transition` that also writes a new dispatch id (fence) for the step the caller
        sends next; answers the record and that fence (the message must carry it)."""
        written = self.write(record, target, reason, dispatch=True, history=True, **kwargs)
        return written.record, written.fence

    def write(
        self,
        record: RefundRecord,
        target: State,
        reason: str,
        *,
        fields: Mapping[str, Any] | None = None,
        timer: TimerAction = "keep",
        due: float | None = None,
        due_in: float | None = None,
        actor: str = "pipeline",
        outbox: Sequence[str] = (),
        dispatch: bool = False,
        then: Sequence[Edge] = (),
        release: StepLock | None = None,
        history: bool = False,
    ) -> Written:
        """One compare-and-set write of ``record`` (as :meth:`transition`), in one script.

        ``dispatch``: also write a new dispatch id (``Written.fence``). ``then``: more edges
        written in the same script after ``target`` (each checked against the table; a step that
        continues with the next step records its outcome and the next attempt at once); the
        record ends in the last edge's state, with one history line and one version per edge.
        ``release``: the step lock to release in the same script, if still ours (a step's last
        write), answering whether webhooks are parked for the refund. ``history``: answer the
        record's history too (one more read; steps do not need it, so their records carry none).
        Raises TransitionError as :meth:`transition`.
        """
        ref = record.client_reference
        at = now()
        lines: list[str] = []
        merged: dict[str, Any] = {}
        state = record.state
        for edge_target, edge_reason, edge_fields in [(target, reason, fields or {}), *then]:
            if edge_target != state:
                if not is_allowed(state, edge_target):
                    raise TransitionError(ref, state, edge_target, "not an allowed transition")
                lines.append(history_line(at, state, edge_target, edge_reason, actor))
            merged.update(edge_fields)
            state = edge_target
        if state in FINAL_STATES:
            timer = "clear"
        if timer == "set" and due is None and due_in is None:
            raise ValueError("timer='set' needs a due time")
        sets: list[str] = []
        dels: list[str] = []
        for name, value in merged.items():
            if value is None:
                dels.append(FIELDS[name])
            else:
                sets += [FIELDS[name], encode(value)]
        keys = [
            record_key(ref),
            TIMERS,
            state_key(record.state),
            state_key(state),
            OUTBOX,
            history_key(ref),
            legacy_history_key(ref),
            parked_key(ref),
            ARCHIVE_QUEUE,
        ]
        refund_id = merged.get("crypto_refund_id")
        if refund_id and str(refund_id) != record.crypto_refund_id:
            # Webhooks match on the id first. A record that already holds this id had its index
            # written (SET NX) by the transition that stored it: not again on every poll.
            keys.append(refund_id_key(str(refund_id)))
        keys.append(IN_FLIGHT)
        token = release.token if release is not None and release.held else None
        argv = [
            ref,
            record.state,
            state,
            encode(at),
            f"{timer}+dispatch" if dispatch else timer,
            f"+{float(due_in)!r}" if due_in is not None else encode(due or 0),
            str(len(lines)),
            str(len(sets) // 2),
            str(len(dels)),
            str(len(outbox)),
            token or "",
            "1" if history else "",
            *lines,
            *sets,
            *dels,
            *outbox,
            index_change(record.state, state, record.created_at),
        ]
        ok, answer, *rest = self._transition(keys=keys, args=argv)
        if not ok:
            why = "record does not exist" if not answer else f"record is now {answer}"
            raise TransitionError(ref, answer or None, state, why)
        # The script answers with the record as written: no second round trip to read it back.
        flat = list(answer)
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        hist, parked = rest[0], int(rest[1])
        return Written(
            decode(ref, raw, hist or None),
            int(raw.get("disp") or 0),
            None if parked < 0 else bool(parked),
        )
