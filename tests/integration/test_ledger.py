"""The ledger and the token cache against a real (private) Redis."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from config.settings import Settings
from refunds import actions
from refunds.errors import ConflictError, PaymentConflictError, TransitionError
from refunds.mce.auth import TokenCache
from refunds.mce.schemas import TokenData
from refunds.models import RefundIntent, State
from refunds.store.events import EVENT_TTL, EventStore
from refunds.store.keys import event_key, history_key, parked_key, record_key, record_pattern
from refunds.store.ledger import Ledger, StepLock
from refunds.store.outbox import Outbox
from refunds.store.tokens import TokenStore


def intent(ref: str, txn: str | None = None) -> RefundIntent:
    """One payment per reference (one payment is refunded under one reference)."""
    return RefundIntent.parse(
        {
            "originalTransactionType": 1,
            "originalTransactionId": txn or f"tx-{ref}",
            "clientReference": ref,
        }
    )


def test_submit_is_idempotent_and_detects_conflicts(ledger: Ledger, prefix: str) -> None:
    first = ledger.submit(intent(prefix + "a"), due_in=30)
    again = ledger.submit(intent(prefix + "a"), due_in=30)
    assert first.created and not again.created
    assert again.record.created_at == first.record.created_at
    with pytest.raises(ConflictError) as info:
        ledger.submit(intent(prefix + "a", txn="other"), due_in=30)
    assert info.value.differences == ["originalTransactionId"]
    assert ledger.get(prefix + "a").original_transaction_id == f"tx-{prefix}a"  # nothing changed


def test_one_payment_is_refunded_under_one_reference(ledger: Ledger, prefix: str) -> None:
    txn = f"tx-{prefix}ORDER-7"
    first = ledger.submit(intent(prefix + "ORDER-7", txn), due_in=30)
    with pytest.raises(PaymentConflictError) as info:
        ledger.submit(intent(prefix + "order-7", txn), due_in=30)
    assert info.value.existing_reference == prefix + "ORDER-7"
    assert f"already refunded under clientReference '{prefix}ORDER-7'" in str(info.value)
    assert ledger.find(prefix + "order-7") is None  # nothing written
    # The id compares byte-exact, as MCE compares it: another case is another payment.
    assert ledger.submit(intent(prefix + "lower", txn.lower()), due_in=30).created
    # In a batch, the second reference is a conflict naming the first.
    out = ledger.submit_many([intent(prefix + "b-1", txn), intent(prefix + "ORDER-7", txn)], 0)
    assert isinstance(out[0], PaymentConflictError)
    assert out[0].existing_reference == prefix + "ORDER-7"
    assert not isinstance(out[1], ConflictError) and out[1].record == first.record
    # Once the holder is cancelled (nothing was confirmed), a new reference may refund it.
    ledger.transition(first.record, State.CANCELLED, "cancelled: wrong address")
    assert ledger.submit(intent(prefix + "ORDER-7b", txn), due_in=30).created
    with pytest.raises(PaymentConflictError):
        ledger.submit(intent(prefix + "ORDER-7c", txn), due_in=30)


def test_an_evm_address_in_another_case_is_the_same_intent(ledger: Ledger, prefix: str) -> None:
    checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    data = {"originalTransactionType": 1, "originalTransactionId": f"tx-{prefix}evm",
            "clientReference": prefix + "evm"}
    first = ledger.submit(RefundIntent.parse({**data, "refundAddress": checksummed}), due_in=30)
    again = ledger.submit(
        RefundIntent.parse({**data, "refundAddress": checksummed.lower()}), due_in=30
    )
    assert first.created and not again.created
    assert again.record.refund_address == checksummed  # the merchant's first spelling, exactly
    with pytest.raises(ConflictError) as info:
        ledger.submit(RefundIntent.parse({**data, "refundAddress": "0x" + "1" * 40}), due_in=30)
    assert info.value.differences == ["refundAddress"]


def test_submit_many_builds_records_and_reports_conflicts(ledger: Ledger, prefix: str) -> None:
    ledger.submit(intent(prefix + "old"), due_in=30)
    batch = [
        intent(prefix + "n1"),
        intent(prefix + "old"),
        intent(prefix + "n1"),
        intent(prefix + "old", txn="changed"),
    ]
    out = ledger.submit_many(batch, due_in=0)
    assert [getattr(o, "created", None) for o in out] == [True, False, False, None]
    assert isinstance(out[3], ConflictError)
    stored = ledger.get(prefix + "n1")
    assert stored == out[0].record  # type: ignore[union-attr]  # built locally == read back
    assert ledger.due_at(prefix + "n1") is not None


def test_transition_is_compare_and_set(ledger: Ledger, prefix: str) -> None:
    rec = ledger.submit(intent(prefix + "c"), due_in=30).record
    moved = ledger.transition(rec, State.CREATING, "create attempt 1", fields={"attempts": 1})
    assert moved.state == State.CREATING and moved.attempts == 1 and moved.version == 2
    with pytest.raises(TransitionError, match="record is now creating"):
        ledger.transition(rec, State.CREATING, "stale writer")  # read before the move
    with pytest.raises(TransitionError, match="not an allowed transition"):
        ledger.transition(moved, State.RECEIVED, "backwards")
    assert [h.to_state for h in ledger.get(prefix + "c").history] == ["received", "creating"]


def test_concurrent_writers_only_one_wins(ledger: Ledger, prefix: str) -> None:
    rec = ledger.submit(intent(prefix + "race"), due_in=30).record
    barrier = threading.Barrier(8)

    def move(_: int) -> bool:
        barrier.wait()
        try:
            ledger.transition(rec, State.CREATING, "race")
            return True
        except TransitionError:
            return False

    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(move, range(8)))
    assert wins.count(True) == 1
    assert len(ledger.get(prefix + "race").history) == 2


def test_final_states_are_sticky_and_clear_the_timer(ledger: Ledger, prefix: str) -> None:
    rec = ledger.submit(intent(prefix + "f"), due_in=30).record
    for target in (State.CREATING, State.CREATED, State.CONFIRMING, State.PROCESSING):
        rec = ledger.transition(rec, target, "step", timer="set", due=time.time() + 5)
    done = ledger.transition(
        rec,
        State.COMPLETED,
        "provider status 3",
        fields={"txn_hash": "0xabc", "provider_status": 3},
    )
    assert done.is_final and ledger.due_at(prefix + "f") is None
    for target in State:
        if target != State.COMPLETED:
            with pytest.raises(TransitionError):
                ledger.transition(done, target, "no way out")
    counts = ledger.counts()
    assert prefix + "f" in ledger.references(State.COMPLETED)
    assert counts["completed"] >= 1


def test_claim_due_leases_until_the_lease_runs_out(ledger: Ledger, prefix: str) -> None:
    ref = prefix + "due"
    ledger.submit(intent(ref), due_in=0)
    claimed = ledger.claim_due(lease_seconds=0.5, limit=10_000)
    assert ref in claimed
    assert ref not in ledger.claim_due(lease_seconds=0.5, limit=10_000)  # leased
    time.sleep(0.6)  # the worker "died": the lease runs out and it comes due again
    assert ref in ledger.claim_due(lease_seconds=0.5, limit=10_000)


def test_lock_is_exclusive_and_only_its_holder_releases(ledger: Ledger, prefix: str) -> None:
    ledger.submit(intent(prefix + "l"), due_in=30)
    token = ledger.lock(prefix + "l", 5)
    assert token and token.held and ledger.lock(prefix + "l", 5) is None
    stranger = StepLock(prefix + "l", 5)
    stranger.held = True  # claims to hold it, with another token
    ledger.unlock(prefix + "l", stranger)
    assert ledger.lock(prefix + "l", 5) is None
    ledger.unlock(prefix + "l", token)
    assert ledger.lock(prefix + "l", 5) is not None


def test_lock_expires_after_its_timeout(ledger: Ledger, prefix: str) -> None:
    ledger.submit(intent(prefix + "lx"), due_in=30)
    assert ledger.lock(prefix + "lx", 0.3) is not None
    assert ledger.lock(prefix + "lx", 0.3) is None
    time.sleep(0.4)  # the holder died: the lease runs out
    assert ledger.lock(prefix + "lx", 0.3) is not None


def test_a_refund_that_does_not_exist_has_no_lease_to_hold(ledger: Ledger, prefix: str) -> None:
    missing = ledger.lock(prefix + "nobody", 5)
    assert missing is not None and missing.record is None and not missing.held
    assert not ledger.redis.exists(record_key(prefix + "nobody"))  # no hash made for a lease


def test_lock_reads_the_record_in_the_same_round_trip(ledger: Ledger, prefix: str) -> None:
    rec = ledger.submit(intent(prefix + "lr"), due_in=30).record
    moved = ledger.transition(rec, State.CREATING, "create attempt 1", fields={"attempts": 1})
    token = ledger.lock(prefix + "lr", 5)
    assert token is not None and token.record is not None
    # The same record, without its history (a step never reads it: one read less per step).
    assert dataclasses.replace(token.record, history=()) == dataclasses.replace(moved, history=())
    assert moved == ledger.get(prefix + "lr")


def test_transition_answers_the_record_as_stored(ledger: Ledger, prefix: str) -> None:
    rec = ledger.submit(intent(prefix + "as"), due_in=30).record
    a = ledger.transition(rec, State.CREATING, "create attempt 1", fields={"attempts": 1})
    b = ledger.transition(a, State.CREATING, "", fields={"attempts": 2, "last_error": None})
    c = ledger.transition(b, State.CREATED, "created", fields={"crypto_refund_id": "r1"})
    assert [x.version for x in (rec, a, b, c)] == [1, 2, 3, 4]
    assert [h.to_state for h in c.history] == ["received", "creating", "created"]
    assert b.history == a.history  # a field update adds no history line
    assert c == ledger.get(prefix + "as")
    assert prefix + "as" in ledger.references(State.CREATED)
    assert prefix + "as" not in ledger.references(State.CREATING)
    err = {"code": "X", "message": "m"}
    d = ledger.transition(c, State.CREATED, "", fields={"last_error": err, "amount": "5"})
    assert d.last_error == err
    e = ledger.transition(d, State.CREATED, "", fields={"last_error": None, "txn_hash": None})
    assert e.last_error is None and e.txn_hash is None and e.version == 6
    assert e == ledger.get(prefix + "as") and "err" not in ledger.redis.hgetall(
        record_key(e.client_reference)
    )


def test_legacy_history_in_the_hash_moves_to_its_own_key(ledger: Ledger, prefix: str) -> None:
    ref = prefix + "legacy"
    rec = ledger.submit(intent(ref), due_in=30).record
    old = "\n".join(ledger.redis.lrange(history_key(ref), 0, -1))
    ledger.redis.delete(history_key(ref))
    ledger.redis.hset(record_key(ref), "hist", old)  # as written before the split
    assert ledger.get(ref).history == rec.history
    moved = ledger.transition(rec, State.CREATING, "create attempt 1")
    assert [h.to_state for h in moved.history] == ["received", "creating"]
    assert ledger.redis.hget(record_key(ref), "hist") is None
    assert moved == ledger.get(ref)


def test_claim_with_states_answers_states_and_beats(ledger: Ledger, prefix: str) -> None:
    ref = prefix + "cs"
    ledger.submit(intent(ref), due_in=0)
    ledger.set_due(prefix + "ghost", 0)  # a timer whose record is gone
    before = time.time()
    claimed = dict(ledger.claim_due_states(lease_seconds=30, limit=10_000, heartbeat=True))
    assert claimed[ref] == "received" and claimed[prefix + "ghost"] is None
    assert (ledger.due_at(ref) or 0) >= before + 29  # leased
    since = ledger.since_last_tick()
    assert since is not None and since < 5
    assert ref not in dict(ledger.claim_due_states(lease_seconds=30, limit=10_000))
    ledger.clear_timer(prefix + "ghost")


class CountingFetch:
    def __init__(self, lifetime: float, delay: float = 0.0) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self) -> TokenData:
        time.sleep(self.delay)
        with self.lock:
            self.calls += 1
        return TokenData.model_validate(
            {"accessToken": uuid.uuid4().hex, "expiresIn": self.lifetime}
        )


@pytest.fixture
def fresh_token_key(ledger: Ledger) -> None:
    TokenStore(ledger.redis).clear()


def test_token_refresh_is_single_flight_across_processes(
    ledger: Ledger, settings: Settings, fresh_token_key: None
) -> None:
    fetch = CountingFetch(lifetime=60, delay=0.2)
    # Eight caches stand in for eight worker processes sharing one Redis.
    caches = [TokenCache(ledger.redis, settings, fetch) for _ in range(8)]
    barrier = threading.Barrier(8)

    def get(cache: TokenCache) -> str:
        barrier.wait()
        return cache.get()

    with ThreadPoolExecutor(8) as pool:
        tokens = set(pool.map(get, caches))
    assert fetch.calls == 1 and len(tokens) == 1


def test_token_margin_scales_with_lifetime(
    ledger: Ledger, settings: Settings, fresh_token_key: None
) -> None:
    cache = TokenCache(ledger.redis, settings, CountingFetch(lifetime=8))
    assert cache.margin(8) == pytest.approx(1.6)  # a fraction of a short lifetime
    assert cache.margin(86_400) == settings.token_refresh_max_margin  # capped for long ones
    first = cache.get()
    assert cache.get() == first  # reused for most of its life


def test_token_refreshes_ahead_of_expiry(
    ledger: Ledger, settings: Settings, fresh_token_key: None
) -> None:
    fetch = CountingFetch(lifetime=1.0)
    cache = TokenCache(ledger.redis, settings, fetch)
    first = cache.get()
    time.sleep(0.85)  # inside the 20% margin, before expiry
    assert cache.get() != first and fetch.calls == 2


def test_invalidate_only_drops_the_refused_token(
    ledger: Ledger, settings: Settings, fresh_token_key: None
) -> None:
    fetch = CountingFetch(lifetime=60)
    a, b = (TokenCache(ledger.redis, settings, fetch) for _ in range(2))
    old = a.get()
    a.invalidate(old)
    new = b.get()
    assert new != old and fetch.calls == 2
    a.invalidate(old)  # a late 401 for the old token must not throw away the new one
    assert b.get() == new and a.get() == new and fetch.calls == 2


def test_operator_retry_does_not_stand_in_for_an_approval(
    ledger: Ledger, settings: Settings, prefix: str
) -> None:
    strict = settings.model_copy(update={"approval_thresholds": {"USDT": Decimal("100")}})
    rec = ledger.submit(intent(prefix + "big"), due_in=30).record
    rec = ledger.transition(rec, State.CREATING, "create attempt 1")
    rec = ledger.transition(
        rec,
        State.NEEDS_ATTENTION,
        "provider refused: X",
        fields={
            "crypto_refund_id": "CR1",
            "provider_status": 1,
            "amount": Decimal("500"),
            "currency": "USDT",
        },
    )
    result = actions.retry(ledger, strict, prefix + "big", actor="ann", reason="try again")
    assert result.record.state == State.AWAITING_APPROVAL and result.next_task is None
    due = ledger.due_at(prefix + "big")  # held, and read slowly so it cannot drift
    assert due is not None and due > time.time() + strict.held_poll_seconds - 60
    assert result.record.key_generation == 1
    approved = actions.approve(ledger, strict, prefix + "big", actor="bob", reason="checked")
    assert approved.record.state == State.CONFIRMING and approved.next_task == "confirm"
    assert [h.actor for h in approved.record.history][-2:] == ["ann", "bob"]


# --- the webhook event store, the outbox and the token storage ------------------------------------


def test_event_store_keeps_the_first_delivery_and_answers_duplicates(
    ledger: Ledger, prefix: str
) -> None:
    events = EventStore.of(ledger)
    nid = prefix + "ev"
    body = b'{"first":1}'
    assert events.store(nid, body, 1000.0) == "new"
    stored = events.get(nid)
    # Body, hash, status, time and expiry are written by the same call: no half-stored event.
    assert stored == {
        "body": '{"first":1}',
        "hash": hashlib.sha256(body).hexdigest(),
        "status": "received",
        "received_at": "1000.0",
    }
    assert EVENT_TTL - 5 < events.ttl_of(nid) <= EVENT_TTL
    assert events.store(nid, body, 1001.0) == "duplicate"  # in flight: not claimed twice
    events.mark(nid, "applied", prefix + "r")
    assert events.store(nid, body, 2000.0) == "duplicate"  # handled
    assert events.get(nid) == {**stored, "status": "applied", "ref": prefix + "r"}


def test_event_store_counts_a_conflicting_body_and_keeps_the_first(
    ledger: Ledger, prefix: str
) -> None:
    events = EventStore.of(ledger)
    nid = prefix + "cf"
    assert events.store(nid, b'{"a":1}', 1.0) == "new"
    assert events.store(nid, b'{"a":2}', 2.0) == "conflict"
    stored = events.get(nid)
    assert stored["body"] == '{"a":1}' and stored["conflicts"] == "1"
    assert stored["conflict_hash"] == hashlib.sha256(b'{"a":2}').hexdigest()


def test_event_store_lets_a_repeat_finish_a_failed_or_abandoned_apply(
    ledger: Ledger, prefix: str
) -> None:
    events = EventStore.of(ledger)
    nid = prefix + "err"
    assert events.store(nid, b"{}", 1.0, claim_seconds=60) == "new"
    assert events.store(nid, b"{}", 30.0, claim_seconds=60) == "duplicate"  # still in flight
    assert events.store(nid, b"{}", 62.0, claim_seconds=60) == "retry"  # abandoned claim
    events.mark_error(nid, "ValueError: boom")
    assert events.store(nid, b"{}", 63.0, claim_seconds=60) == "retry"
    assert events.get(nid)["status"] == "received"
    assert events.get(nid)["received_at"] == "63.0"


def test_event_half_written_by_the_old_code_is_applied_on_redelivery(
    ledger: Ledger, prefix: str
) -> None:
    # The old code's HSETNX ran, then the process died before the status HSET and the EXPIRE:
    # every redelivery used to be answered "duplicate" and the event never applied.
    events = EventStore.of(ledger)
    nid = prefix + "half"
    ledger.redis.hsetnx(event_key(nid), "body", '{"old":1}')
    assert events.store(nid, b'{"old":1}', 5.0) == "new"
    assert events.get(nid)["status"] == "received"
    assert events.ttl_of(nid) > 0


def test_parked_events_expire_and_unpark_returns_the_body(ledger: Ledger, prefix: str) -> None:
    events = EventStore.of(ledger)
    ref = prefix + "p"
    assert not events.has_parked(ref) and events.parked(ref) == []
    events.store(prefix + "n1", b'{"n":1}', 1.0)
    events.park(prefix + "n1", ref, 10.0, None)  # None: no record for ref yet
    events.park(prefix + "n2", ref, 5.0, None)  # its body expired or was never stored
    assert events.has_parked(ref)
    assert events.parked(ref) == [prefix + "n2", prefix + "n1"]  # oldest first
    assert 0 < int(ledger.redis.ttl(parked_key(ref))) <= EVENT_TTL
    assert events.unpark(ref, prefix + "n2") is None
    assert events.unpark(ref, prefix + "n1") == '{"n":1}'
    assert not events.has_parked(ref)


def test_outbox_done_retry_and_bury(ledger: Ledger, prefix: str) -> None:
    outbox = Outbox.of(ledger)
    member = f"http:{prefix}o"
    outbox.retry_at(member, 100.0)
    assert outbox.failed(member) == 1 and outbox.failed(member) == 2
    assert outbox.due_at(member) == 100.0 and outbox.attempts(member) == 2
    outbox.done(member)
    assert outbox.due_at(member) is None and outbox.attempts(member) == 0
    outbox.retry_at(member, 100.0)
    outbox.bury(member, 200.0)
    assert outbox.due_at(member) is None and member in outbox.dead()


def test_token_store_lock_is_exclusive_and_expires(ledger: Ledger, fresh_token_key: None) -> None:
    store = TokenStore(ledger.redis)
    first = store.try_lock(0.3)
    assert first is not None and store.try_lock(0.3) is None
    store.unlock(first)
    second = store.try_lock(0.3)
    assert second is not None
    time.sleep(0.4)  # the holder died: the lock runs out
    third = store.try_lock(5)
    assert third is not None
    store.unlock(second)  # expired and taken by another: must not release theirs
    assert store.try_lock(5) is None
    store.unlock(third)


def test_token_store_invalidates_only_the_refused_token(
    ledger: Ledger, fresh_token_key: None
) -> None:
    store = TokenStore(ledger.redis)
    store.write("tok-a", 60, 10)
    assert store.invalidate("tok-old") is False
    assert store.read() is not None and store.read()[0] == "tok-a"  # type: ignore[index]
    assert store.invalidate("tok-a") is True and store.read() is None


def test_record_pattern_matches_the_records_with_that_prefix_only(
    ledger: Ledger, prefix: str
) -> None:
    for ref in ("a-1", "a-2", "b-1"):
        ledger.submit(intent(prefix + ref, txn="tx-" + ref), due_in=30)
    found = sorted(ledger.redis.scan_iter(match=record_pattern(prefix + "a-"), count=1000))
    assert found == [record_key(prefix + "a-1"), record_key(prefix + "a-2")]  # no history keys
