"""The transition script answers the record as written without reading it back (issue 12).

The answer is built inside the script from the hash it read and its own writes; it must equal
what a fresh read of Redis shows: fields set and deleted, the version, a dispatch id added, a
legacy in-hash history moved to its own key, and fields written by others (the tick's fence)
that the caller never saw.
"""

from __future__ import annotations

from typing import cast

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds.context import Context
from refunds.errors import TransitionError
from refunds.models import RefundRecord, State
from refunds.store.keys import history_key, legacy_history_key, record_key, state_key
from tests.steps.conftest import received


def _fresh(ctx: Context, ref: str) -> RefundRecord:
    record = ctx.ledger.find(ref)
    assert record is not None
    return record


def _raw(ctx: Context, ref: str) -> dict[str, str]:
    raw = cast(dict[str, str], ctx.ledger.redis.hgetall(record_key(ref)))
    return dict(raw)


def test_the_answered_record_is_the_stored_one_after_sets_deletes_and_a_dispatch(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    ref = "answer-1"
    record = received(ctx, sandbox, ref)
    error = {"type": "X", "message": "m", "status": 503, "code": None, "logId": None}
    record = ctx.ledger.transition(
        record, State.CREATING, "create attempt 1", fields={"attempts": 1, "last_error": error}
    )
    assert record == _fresh(ctx, ref) and record.last_error == error
    # Someone else's write the caller did not see (the tick's claim adds a dispatch id).
    ctx.ledger.redis.hincrby(record_key(ref), "disp", 1)
    raw_before = _raw(ctx, ref)
    new, fence = ctx.ledger.transition_dispatch(
        record,
        State.CREATED,
        "created",
        fields={"crypto_refund_id": "CR-ANSWER-1", "last_error": None, "attempts": 0},
        timer="set",
        due_in=5.0,
    )
    stored = _fresh(ctx, ref)
    assert new == stored
    assert new.last_error is None and "err" not in _raw(ctx, ref)
    assert new.version == int(raw_before["ver"]) + 1
    assert fence == int(raw_before["disp"]) + 1 == int(_raw(ctx, ref)["disp"])
    assert [h.to_state for h in new.history] == ["received", "creating", "created"]


def test_a_legacy_history_in_the_hash_is_moved_and_answered(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    ref = "answer-2"
    received(ctx, sandbox, ref)
    client = ctx.ledger.redis
    lines = cast(list[str], client.lrange(history_key(ref), 0, -1))
    client.delete(history_key(ref))
    client.hset(record_key(ref), "hist", "\n".join(lines))  # as the oldest releases wrote it
    old = _fresh(ctx, ref)
    assert [h.to_state for h in old.history] == ["received"]
    new = ctx.ledger.transition(old, State.CREATING, "create attempt 1", fields={"attempts": 1})
    assert "hist" not in _raw(ctx, ref)
    assert new == _fresh(ctx, ref)
    assert [h.to_state for h in new.history] == ["received", "creating"]
    assert client.llen(history_key(ref)) == 2  # moved into the list, in order
    # An update without a transition answers the history unchanged.
    same = ctx.ledger.transition(new, State.CREATING, "", fields={"attempts": 2})
    assert same == _fresh(ctx, ref) and same.history == new.history and same.attempts == 2


def test_a_legacy_history_string_is_read_before_the_list(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """Records from the releases that kept the history in a string (``rp:h:{ref}``) keep it
    there: it is read first, and new lines go to the list after it."""
    ref = "answer-3"
    received(ctx, sandbox, ref)
    client = ctx.ledger.redis
    lines = cast(list[str], client.lrange(history_key(ref), 0, -1))
    client.delete(history_key(ref))
    client.set(legacy_history_key(ref), "\n".join(lines))
    old = _fresh(ctx, ref)
    new = ctx.ledger.transition(old, State.CREATING, "create attempt 1", fields={"attempts": 1})
    assert [h.to_state for h in new.history] == ["received", "creating"]
    assert new == _fresh(ctx, ref)
    assert client.get(legacy_history_key(ref)) == "\n".join(lines)  # left as it was
    assert client.llen(history_key(ref)) == 1


def test_a_chained_write_adds_a_line_and_a_version_per_edge(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    ref = "answer-4"
    record = received(ctx, sandbox, ref)
    record = ctx.ledger.transition(record, State.CREATING, "create attempt 1")
    written = ctx.ledger.write(
        record,
        State.CREATED,
        "created",
        fields={"crypto_refund_id": "CR-ANSWER-4", "attempts": 0},
        then=[(State.CONFIRMING, "confirm attempt 1", {"attempts": 1})],
        timer="set",
        due_in=5.0,
        history=True,
    )
    assert written.record == _fresh(ctx, ref)
    assert written.record.state == State.CONFIRMING and written.record.attempts == 1
    assert written.record.version == record.version + 2
    assert [h.to_state for h in written.record.history][-2:] == ["created", "confirming"]
    assert written.parked is None  # no lock released: not asked
    assert ctx.ledger.redis.sismember(state_key(State.CONFIRMING), ref)
    assert not ctx.ledger.redis.sismember(state_key(State.CREATING), ref)
    assert not ctx.ledger.redis.sismember(state_key(State.CREATED), ref)
    assert ctx.ledger.reference_of_refund_id("CR-ANSWER-4") == ref
    # An edge the table forbids anywhere in the chain refuses the whole write.
    with pytest.raises(TransitionError):
        ctx.ledger.write(written.record, State.PROCESSING, "", then=[(State.RECEIVED, "", {})])
    assert _fresh(ctx, ref) == written.record
