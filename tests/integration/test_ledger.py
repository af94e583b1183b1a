"""The ledger and the token cache against a real (private) Redis."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from config.settings import Settings
from refunds import actions
from refunds.errors import ConflictError, TransitionError
from refunds.mce.auth import TokenCache
from refunds.mce.schemas import TokenData
from refunds.models import RefundIntent, State
from refunds.store.ledger import Ledger


def intent(ref: str, txn: str = "tx") -> RefundIntent:
    return RefundIntent.parse(
        {"originalTransactionType": 1, "originalTransactionId": txn, "clientReference": ref}
    )


def test_submit_is_idempotent_and_detects_conflicts(ledger: Ledger, prefix: str) -> None:
    first = ledger.submit(intent(prefix + "a"), due_in=30)
    again = ledger.submit(intent(prefix + "a"), due_in=30)
    assert first.created and not again.created
    assert again.record.created_at == first.record.created_at
    with pytest.raises(ConflictError) as info:
        ledger.submit(intent(prefix + "a", txn="other"), due_in=30)
    assert info.value.differences == ["originalTransactionId"]
    assert ledger.get(prefix + "a").original_transaction_id == "tx"  # nothing changed


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
    token = ledger.lock(prefix + "l", 5)
    assert token and ledger.lock(prefix + "l", 5) is None
    ledger.unlock(prefix + "l", "not-the-token")
    assert ledger.lock(prefix + "l", 5) is None
    ledger.unlock(prefix + "l", token)
    assert ledger.lock(prefix + "l", 5) is not None


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
    ledger.redis.delete("rp:mce:token", "rp:mce:token:lock")


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
    rec = ledger.transition(rec, State.NEEDS_ATTENTION, "provider refused: X", fields={
        "crypto_refund_id": "CR1", "provider_status": 1, "amount": Decimal("500"),
        "currency": "USDT"})
    result = actions.retry(ledger, strict, prefix + "big", actor="ann", reason="try again")
    assert result.record.state == State.AWAITING_APPROVAL and result.next_task is None
    due = ledger.due_at(prefix + "big")  # held, and read slowly so it cannot drift
    assert due is not None and due > time.time() + strict.held_poll_seconds - 60
    assert result.record.key_generation == 1
    approved = actions.approve(ledger, strict, prefix + "big", actor="bob", reason="checked")
    assert approved.record.state == State.CONFIRMING and approved.next_task == "confirm"
    assert [h.actor for h in approved.record.history][-2:] == ["ann", "bob"]
