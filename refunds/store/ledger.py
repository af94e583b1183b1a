"""The ledger: one Redis hash per refund, submitted, read and moved by atomic transitions.

The ledger is the truth; Celery messages are only nudges. Every change of a record goes through
:meth:`Ledger.transition`, a Lua compare-and-set: it applies only if the record is still in the
state the caller read, so two workers (a redelivered message, a webhook and a poll) can never both
move the same refund. The allowed edges are checked against ``models.TRANSITIONS`` before the
script runs; the script's state check makes that decision atomic. Also here: intake (``submit``),
reads and listings, the provider-conflict set and the cryptoRefundId index.

The keys (record hash, history list, state sets, creation index, conflicts, refund-id index)
are listed with their types and lifetimes in ``refunds.store.keys``. The history lives in a list
of its own (one RPUSH per write, never read by a step) so the hash stays a compact listpack
(Redis converts a hash to a table, about twice the memory, once any value exceeds 64 bytes).
Three neighbours hold the rest, so each stays readable in one sitting: ``refunds.store.codec``
maps a record to its hash fields and back; ``refunds.store.timers`` (claim, set, clear, lag,
heartbeat) and ``refunds.store.locks`` (the per-refund step lease, kept in the record's hash, and
its heartbeat) are inherited, so callers keep one ``Ledger`` object. ``StepLock`` is re-exported
here for the code that imports it from the ledger.

Round trips: a step costs two scripts, whatever it writes. Taking the lease reads the record and
begins the step's attempt (``store.locks``); :meth:`Ledger.write` records the outcome (CAS,
fields, history, state sets, timer, outbox, a dispatch id), may begin the next step in the same
script (``then``), and releases the lease and looks for parked webhooks (``release``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from config.settings import Settings
from refunds.errors import (
    ConflictError,
    PaymentConflictError,
    RefundNotFoundError,
    TransitionError,
)
from refunds.models import FINAL_STATES, RefundIntent, RefundRecord, State, is_allowed, now
from refunds.store.codec import FIELDS, decode, encode, history_line, new_record
from refunds.store.connection import ensure_durable
from refunds.store.keys import (
    ALL,
    CONFLICTS,
    OUTBOX,
    RECORD_PREFIX,
    TIMERS,
    history_key,
    legacy_history_key,
    parked_key,
    payment_key,
    record_key,
    refund_id_key,
    state_key,
)
from refunds.store.locks import StepLock, StepLocks
from refunds.store.lua import HISTORY, NOW
from refunds.store.timers import Timers

__all__ = [
    "ALL",
    "CONFLICTS",
    "OUTBOX",
    "TIMERS",
    "Ledger",
    "StepLock",
    "SubmitResult",
    "TimerAction",
    "Written",
    "history_key",
    "record_key",
    "state_key",
]

TimerAction = Literal["keep", "set", "clear"]


# KEYS: record, timers, all, state set of the new state, history list, payment index
# ARGV: ref, now, due in (seconds from Redis TIME), fp, history line, record key prefix, then
#       field/value pairs
# Answers the existing record's fp, {'payment', the reference that holds the payment} (nothing
# written: one original payment is refunded under one reference), or false (written).
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], 'fp')
end
local holder = redis.call('GET', KEYS[6])
if holder and holder ~= ARGV[1]
    and redis.call('HGET', ARGV[6] .. holder, 'state') ~= 'cancelled' then
  return {'payment', holder}
end
redis.call('SET', KEYS[6], ARGV[1])
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local t = redis.call('TIME')
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%.6f', due), ARGV[1])
return false
"""

# KEYS: record, timers, old state set, new state set, outbox, history list, legacy history string,
#       parked events[, refund id index]
# (the index key only when the transition sets a cryptoRefundId: SET NX, the first reference wins)
# ARGV: ref, expected state, target state, now, timer action ('set', 'clear', 'keep'; '+dispatch'
#       appended: also write a new dispatch id), due (epoch seconds, or '+seconds' from Redis
#       TIME), H history lines, N sets, M deletes, K outbox members, step lease token to release
#       ('' = none), answer the history ('1' or ''), then the H lines, N field/value pairs, M
#       field names, K members.
# Answers {1, the record as written (field/value pairs), its history ('' unless asked), parked}
# or {0, the current state}. ``parked`` is 1/0 (events parked for the refund) when a release was
# asked, -1 when not. The lease is released (its fields emptied in the same HSET) only if still
# ours: one that expired and another step took is theirs.
# One HGETALL reads the record (state, version, dispatch id, the fields to delete: only present
# ones are deleted); one HSET writes every field with the new state, time and version (one
# version per history line: a chained transition, say created then confirming, counts two); the
# history lines go out in one RPUSH. The record is answered from what was read and written (no
# read back); the history only when asked (LRANGE), since a step never needs it.
_TRANSITION = (
    NOW
    + HISTORY
    + """
local h, n, m, k = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local flat = redis.call('HGETALL', KEYS[1])
local rec = {}
for j = 1, #flat, 2 do rec[flat[j]] = flat[j + 1] end
local current = rec['state']
if not current then return {0, ''} end
if current ~= ARGV[2] then return {0, current} end
local i = 13
local lines = {}
for j = 1, h do lines[#lines + 1] = ARGV[i]; i = i + 1 end
local sets = {}
for j = 1, n do
  sets[#sets + 1] = ARGV[i]; sets[#sets + 1] = ARGV[i + 1]; i = i + 2
end
sets[#sets + 1] = 'state'; sets[#sets + 1] = ARGV[3]
sets[#sets + 1] = 'updated'; sets[#sets + 1] = ARGV[4]
sets[#sets + 1] = 'ver'; sets[#sets + 1] = tostring((tonumber(rec['ver']) or 0) + math.max(h, 1))
local timer = ARGV[5]
if string.sub(timer, -9) == '+dispatch' then
  -- The step nudges the next one: that message is a dispatch of its own, fenced like the tick's.
  sets[#sets + 1] = 'disp'; sets[#sets + 1] = tostring((tonumber(rec['disp']) or 0) + 1)
  timer = string.sub(timer, 1, -10)
end
if ARGV[11] ~= '' and rec['lk'] == ARGV[11] then
  -- The step's last write releases its lease in the same HSET.
  sets[#sets + 1] = 'lk'; sets[#sets + 1] = ''
  sets[#sets + 1] = 'lku'; sets[#sets + 1] = ''
end
redis.call('HSET', KEYS[1], unpack(sets))
for j = 1, #sets, 2 do rec[sets[j]] = sets[j + 1] end
-- Delete only the fields that are there (most updates clear an error that was never set).
local dels = {}
for j = 1, m do
  if rec[ARGV[i]] then dels[#dels + 1] = ARGV[i]; rec[ARGV[i]] = nil end
  i = i + 1
end
if #dels > 0 then redis.call('HDEL', KEYS[1], unpack(dels)) end
if KEYS[9] then redis.call('SET', KEYS[9], ARGV[1], 'NX') end
if k > 0 then
  local due = string.format('%.6f', now())
  local members = {}
  for j = 1, k do members[#members + 1] = due; members[#members + 1] = ARGV[i]; i = i + 1 end
  redis.call('ZADD', KEYS[5], unpack(members))
end
push_history(rec, KEYS[1], KEYS[6], lines)
if ARGV[2] ~= ARGV[3] then
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('SADD', KEYS[4], ARGV[1])
end
if timer == 'set' then
  local due = ARGV[6]
  if string.sub(due, 1, 1) == '+' then
    -- A relative due time: from Redis TIME, the one clock every host shares.
    due = string.format('%.6f', now() + tonumber(string.sub(due, 2)))
  end
  redis.call('ZADD', KEYS[2], due, ARGV[1])
elseif timer == 'clear' then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local parked = -1
if ARGV[11] ~= '' then
  -- The step's last write also says whether webhooks wait for the refund.
  parked = redis.call('EXISTS', KEYS[8])
end
local hist = ''
if ARGV[12] ~= '' then
  hist = redis.call('GET', KEYS[7]) or ''
  local listed = redis.call('LRANGE', KEYS[6], 0, -1)
  if #listed > 0 then hist = hist .. '\\n' .. table.concat(listed, '\\n') end
end
-- The record as written, from the hash read at the start and this script's own writes (the
-- script is atomic: no other write came between): no HGETALL to read it back.
local out = {}
for f, v in pairs(rec) do out[#out + 1] = f; out[#out + 1] = v end
return {1, out, hist, parked}
"""
)


@dataclass(frozen=True)
class SubmitResult:
    record: RefundRecord
    created: bool


@dataclass(frozen=True)
class Written:
    """What one :meth:`Ledger.write` wrote: the record as written (its ``history`` only when
    asked for), its dispatch id (``fence``: the one a nudge sent after a dispatching write must
    carry) and, when the write released a step lock, whether webhooks are parked for the refund
    (None: not asked)."""

    record: RefundRecord
    fence: int
    parked: bool | None


#: One more edge written by the same script after the first (see :meth:`Ledger.write`):
#: target state, history reason, fields.
Edge = tuple[State, str, Mapping[str, Any]]


def _fp(answer: Any) -> str | None:
    """The existing record's fingerprint from the intake script's answer (None: not that)."""
    return answer if isinstance(answer, str) else None


def _payment_taken(intent: RefundIntent, answer: Any) -> PaymentConflictError:
    """The intake script's ``{'payment', holder}``: the payment is another reference's."""
    holder = str(answer[1])
    return PaymentConflictError(
        intent.client_reference,
        holder,
        intent.original_transaction_type,
        intent.original_transaction_id,
    )


class Ledger(Timers, StepLocks):
    """The refund records, their timers and locks, in one Redis database."""

    def __init__(self, client: redis.Redis) -> None:
        Timers.__init__(self, client)
        StepLocks.__init__(self, client)
        self._submit = client.register_script(_SUBMIT)
        self._transition = client.register_script(_TRANSITION)

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        return cls(redis.Redis.from_url(url, decode_responses=True, health_check_interval=30))

    # --- intake ---------------------------------------------------------------------------------

    def _submit_args(
        self, intent: RefundIntent, at: float, due_in: float
    ) -> tuple[list[str], list[str]]:
        ref = intent.client_reference
        fields: dict[str, Any] = {
            "state": State.RECEIVED,
            "type": intent.original_transaction_type,
            "txn": intent.original_transaction_id,
            "fp": intent.fingerprint(),
            "created": at,
            "updated": at,
            "ver": 1,
            "attempts": 0,
            "polls": 0,
        }
        if intent.refund_address:
            fields["addr"] = intent.refund_address
        flat = [encode(x) for kv in fields.items() for x in kv]
        hist = history_line(at, None, State.RECEIVED, "submitted", "pipeline")
        payment = payment_key(intent.original_transaction_type, intent.original_transaction_id)
        keys = [record_key(ref), TIMERS, ALL, state_key(State.RECEIVED), history_key(ref), payment]
        argv = [ref, encode(at), encode(float(due_in)), intent.fingerprint(), hist, RECORD_PREFIX]
        argv += flat
        return keys, argv

    def submit(self, intent: RefundIntent, due_in: float) -> SubmitResult:
        """Store a new intent in ``received`` with its timer, or return the existing record.

        ``due_in`` is the safety-net delay: the caller nudges a worker at once, and the timer makes
        the refund come due anyway if that nudge is lost. Raises ConflictError when the reference
        exists with different content.
        """
        at = now()
        keys, argv = self._submit_args(intent, at, due_in)
        answer = self._submit(keys=keys, args=argv)
        return self._submit_outcome(intent, answer)

    def submit_many(
        self, intents: list[RefundIntent], due_in: float
    ) -> list[SubmitResult | ConflictError]:
        """Submit a batch in one pipelined round trip; conflicts are returned, not raised.

        New records are built locally instead of read back, so a batch costs two round trips at
        most (the second only for references that existed already).
        """
        at = now()
        pipe = self.redis.pipeline(transaction=False)
        for intent in intents:
            keys, argv = self._submit_args(intent, at, due_in)
            self._submit(keys=keys, args=argv, client=pipe)
        answers = pipe.execute()
        seen = [i.client_reference for i, a in zip(intents, answers, strict=True) if _fp(a)]
        existing = {r.client_reference: r for r in self.get_many(seen)} if seen else {}
        results: list[SubmitResult | ConflictError] = []
        for intent, answer in zip(intents, answers, strict=True):
            if answer is None:
                results.append(SubmitResult(new_record(intent, at), created=True))
                continue
            try:
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
        if answer is not None and _fp(answer) is None:
            raise _payment_taken(intent, answer)
        record = self.get(intent.client_reference)
        if answer is None:
            return SubmitResult(record, created=True)
        return self._existing_outcome(intent, str(answer), record)

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

    def references(self, state: State | None = None, limit: int | None = None) -> list[str]:
        """References, oldest first; filtered by state when given."""
        if state is None:
            end = -1 if limit is None else limit - 1
            return cast(list[str], self.redis.zrange(ALL, 0, end))
        members = cast(set[str], self.redis.smembers(state_key(state)))
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for ref in members:
            pipe.zscore(ALL, ref)
        scores = pipe.execute()
        ordered = [r for _, r in sorted(zip(scores, members, strict=True), key=lambda p: p[0] or 0)]
        return ordered if limit is None else ordered[:limit]

    def reference_of_refund_id(self, crypto_refund_id: str) -> str | None:
        """The clientReference whose record first recorded ``crypto_refund_id`` (None: no record
        has it). Written by the transition that set the id, in the same script."""
        found = self.redis.get(refund_id_key(crypto_refund_id))
        return None if found is None else str(found)

    def flag_conflict(self, ref: str) -> None:
        """List ``ref`` among the conflicted refunds (before its record is marked, so a crash in
        between lists a record without a mark rather than hiding a mark)."""
        self.redis.sadd(CONFLICTS, ref)

    def unflag_conflict(self, ref: str) -> None:
        """Take ``ref`` off the conflicted refunds (an operator acknowledged its conflict; the
        mark stays on the record)."""
        self.redis.srem(CONFLICTS, ref)

    def conflicted(self) -> list[str]:
        """References whose provider news contradicted a final state, oldest first."""
        members = cast(set[str], self.redis.smembers(CONFLICTS))
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for ref in members:
            pipe.zscore(ALL, ref)
        scores = pipe.execute()
        return [r for _, r in sorted(zip(scores, members, strict=True), key=lambda p: p[0] or 0)]

    def conflict_count(self) -> int:
        return int(self.redis.scard(CONFLICTS))

    def counts(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for state in State:
            pipe.scard(state_key(state))
        return {str(s): int(n) for s, n in zip(State, pipe.execute(), strict=True)}

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
        self, record: RefundRecord, target: State, reason: str, **kwargs: Any
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
        ]
        refund_id = merged.get("crypto_refund_id")
        if refund_id and str(refund_id) != record.crypto_refund_id:
            # Webhooks match on the id first. A record that already holds this id had its index
            # written (SET NX) by the transition that stored it: not again on every poll.
            keys.append(refund_id_key(str(refund_id)))
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

    # --- health ---------------------------------------------------------------------------------

    def ping(self) -> bool:
        """Round trip to Redis; raises redis.RedisError when it is unreachable."""
        return bool(self.redis.ping())

    def record_count(self) -> int:
        """Refunds in the ledger (``rp:all``'s size)."""
        return int(self.redis.zcard(ALL))

    def oldest_in_state(self, state: State | str, chunk: int = 1000) -> tuple[str, float] | None:
        """``(reference, created_at)`` of the oldest refund in ``state``, or None when it has none.

        SSCANs the state's set and ZSCOREs each member in the creation index (pipelined, a chunk
        at a time, so memory stays bounded); a member missing from the index is skipped, never
        guessed. Ties go to the smaller reference.
        """
        best: tuple[float, str] | None = None
        cursor = 0
        while True:
            cursor, members = cast(
                tuple[int, list[str]], self.redis.sscan(state_key(state), cursor, count=chunk)
            )
            if members:
                pipe = self.redis.pipeline(transaction=False)
                for ref in members:
                    pipe.zscore(ALL, ref)
                for ref, score in zip(members, pipe.execute(), strict=True):
                    if score is not None and (best is None or (float(score), ref) < best):
                        best = (float(score), str(ref))
            if int(cursor) == 0:
                break
        return None if best is None else (best[1], best[0])

    def iter_references(self, chunk: int = 1000) -> Iterator[str]:
        """Every reference, oldest first, a chunk at a time."""
        start = 0
        while True:
            part = cast(list[str], self.redis.zrange(ALL, start, start + chunk - 1))
            yield from part
            if len(part) < chunk:
                return
            start += chunk

    # --- durability -----------------------------------------------------------------------------

    def ensure_durable(self, settings: Settings) -> None:
        """Wait until enough replicas have every write this ledger's client made so far, or raise.

        Call after a write that cannot be redone from the provider (intake, an operator action)
        and before answering the caller. Arguments: ``settings.min_replica_acks`` (a count of
        replicas; 0, the default, makes this a no-op) and ``settings.replica_ack_timeout_ms``
        (milliseconds to wait for them, one Redis ``WAIT``). Raises ``NotDurableError`` (fewer
        acks than required within the timeout: the caller must retry) or the ``redis`` error of a
        primary that cannot be reached. The implementation, and why it writes a probe key first,
        is ``refunds.store.connection.ensure_durable``.
        """
        ensure_durable(self.redis, settings)
