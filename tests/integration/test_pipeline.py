"""The pipeline end to end: real Redis, real worker and beat processes, the sandbox over HTTP."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from refunds.errors import ConflictError
from refunds.models import State, is_allowed
from refunds.producer import Producer
from refunds.store.ledger import Ledger
from tests.conftest import SandboxAdmin, Stack, wait_final


def _intents(prefix: str, n: int) -> list[dict[str, object]]:
    return [
        {
            "originalTransactionType": 1,
            "originalTransactionId": f"{prefix}tx{i}",
            "clientReference": f"{prefix}{i}",
        }
        for i in range(n)
    ]


def _submit(
    producer: Producer, sandbox: SandboxAdmin, prefix: str, n: int, **flag: object
) -> list[str]:
    intents = _intents(prefix, n)
    sandbox.flag([str(i["originalTransactionId"]) for i in intents], **flag)
    for intent in intents:
        producer.submit(intent)
    return [str(i["clientReference"]) for i in intents]


def assert_history_follows_table(record: object) -> None:
    history = record.history  # type: ignore[attr-defined]
    assert history[0].from_state is None and history[0].to_state == "received"
    for entry in history[1:]:
        assert is_allowed(State(entry.from_state), State(entry.to_state)), entry
    for prev, nxt in itertools.pairwise(history):
        assert prev.to_state == nxt.from_state, (prev, nxt)


def assert_one_create_each(sandbox: SandboxAdmin, prefix: str, refs: list[str]) -> None:
    effects = sandbox.counters(prefix)["effects"]
    assert sorted(effects) == sorted(refs)
    assert {ref: e["create"] for ref, e in effects.items()} == dict.fromkeys(refs, 1)


def test_intents_reach_completed_with_provider_fields(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    refs = _submit(producer, sandbox, prefix, 20, amount="12.50", currency="USDT")
    records = wait_final(ledger, refs, 60, stack)
    assert {r.state for r in records} == {State.COMPLETED}
    for record in records:
        assert record.crypto_refund_id and record.crypto_refund_id.startswith("CR")
        assert record.txn_hash and record.txn_hash.startswith("0x")
        assert str(record.amount) == "12.50" and record.currency == "USDT"
        assert record.provider_status == 3
        assert_history_follows_table(record)
        assert [h.to_state for h in record.history] == [
            "received",
            "creating",
            "created",
            "confirming",
            "processing",
            "completed",
        ]
    assert_one_create_each(sandbox, prefix, refs)
    effects = sandbox.counters(prefix)["effects"]
    assert all(e["confirm"] == 1 for e in effects.values())
    assert ledger.due_at(refs[0]) is None  # final refunds have no timer


def test_provider_outcomes_failed_and_rejected_are_final_states(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    failed = _submit(producer, sandbox, prefix + "f", 3, outcome="failed")
    rejected = _submit(producer, sandbox, prefix + "r", 3, outcome="rejected")
    records = {r.client_reference: r for r in wait_final(ledger, failed + rejected, 60, stack)}
    assert {records[r].state for r in failed} == {State.FAILED}
    assert {records[r].state for r in rejected} == {State.REJECTED}


def test_no_pending_refund_needs_attention_with_provider_code(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    producer.submit(
        {
            "originalTransactionType": 1,
            "originalTransactionId": prefix + "never",
            "clientReference": prefix + "x",
        }
    )
    (record,) = wait_final(ledger, [prefix + "x"], 30, stack)
    assert record.state == State.NEEDS_ATTENTION
    assert record.last_error is not None
    assert record.last_error["code"] == "CRYPTO_REFUND_NOT_PENDING"
    assert record.last_error["status"] == 422
    assert record.last_error["logId"]
    assert ledger.due_at(record.client_reference) is None  # held for a human, not retried
    calls = sandbox.counters(prefix)
    assert calls["responses"]["create"]["422"] == 1  # a business refusal is not retried


def test_same_intent_twice_is_one_refund_and_one_create(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    intent = _intents(prefix, 1)[0]
    sandbox.flag([str(intent["originalTransactionId"])])
    first = producer.submit(intent)
    second = producer.submit(dict(intent))
    assert first.client_reference == second.client_reference
    assert second.created_at == first.created_at
    with pytest.raises(ConflictError) as conflict:
        producer.submit({**intent, "originalTransactionId": prefix + "other"})
    assert conflict.value.differences == ["originalTransactionId"]

    # Concurrently: many threads submitting the same new intent at once.
    twin = {**intent, "clientReference": prefix + "twin", "originalTransactionId": prefix + "t2"}
    sandbox.flag([prefix + "t2"])
    barrier = threading.Barrier(16)

    def submit_once(_: int) -> float:
        barrier.wait()
        return producer.submit(dict(twin)).created_at

    with ThreadPoolExecutor(16) as pool:
        created_at = set(pool.map(submit_once, range(16)))
    assert len(created_at) == 1

    records = wait_final(ledger, [prefix + "0", prefix + "twin"], 30, stack)
    assert {r.state for r in records} == {State.COMPLETED}
    assert_one_create_each(sandbox, prefix, [prefix + "0", prefix + "twin"])


def test_token_calls_follow_token_lifetime_not_refund_count(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    ttl = 2.0
    sandbox.reset(token_ttl_seconds=ttl, processing_seconds=0.5)
    refs: list[str] = []
    start = time.monotonic()
    for wave in range(8):  # about 8 s of steady traffic, four lifetimes
        refs += _submit(producer, sandbox, f"{prefix}w{wave}-", 8)
        time.sleep(1.0)
    records = wait_final(ledger, refs, 60, stack)
    elapsed = time.monotonic() - start
    assert {r.state for r in records} == {State.COMPLETED}
    tokens = sandbox.counters(prefix)["tokens_issued"]
    lifetimes = elapsed / (ttl * 0.8)  # refreshed 20% ahead of expiry
    assert tokens <= lifetimes + 2, (tokens, elapsed)
    assert tokens < len(refs) / 4  # nowhere near a token per refund
    assert tokens >= 2  # and it did refresh


def test_faults_still_one_create_per_reference_and_all_final(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    sandbox.reset(
        error_rates={"503": 0.15, "429": 0.05, "502": 0.1, "500": 0.05},
        lost_rate=0.1,
        retry_after_seconds=1,
        processing_seconds=0.3,
    )
    refs = _submit(producer, sandbox, prefix, 30)
    records = wait_final(ledger, refs, 90, stack)
    assert {r.state for r in records} == {State.COMPLETED}
    assert_one_create_each(sandbox, prefix, refs)
    counters = sandbox.counters(prefix)
    faults = counters["faults"]
    assert faults["503"] > 0 and faults["502"] > 0 and faults["lost"] > 0  # faults did happen
    for record in records:
        assert_history_follows_table(record)


def _forgetful_provider_run(
    stack: Stack,
    sandbox: SandboxAdmin,
    producer: Producer,
    ledger: Ledger,
    prefix: str,
    *,
    mode: str,
) -> None:
    """Lost answers and no idempotency memory: every retry meets the duplicate behaviours."""
    sandbox.reset(
        lost_rate=0.3,
        idempotency=False,
        duplicate_mode=mode,
        confirm_mode=mode,
        processing_seconds=0.3,
    )
    refs = _submit(producer, sandbox, prefix, 20)
    records = wait_final(ledger, refs, 90, stack)
    assert {r.state for r in records} == {State.COMPLETED}
    assert_one_create_each(sandbox, prefix, refs)


def test_provider_that_forgets_keys_and_rejects_duplicates_still_one_create(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    # Retries meet DUPLICATE_CLIENT_REFERENCE and CRYPTO_REFUND_ALREADY_CONFIRMED, which the
    # pipeline resolves with Get.
    _forgetful_provider_run(stack, sandbox, producer, ledger, prefix, mode="reject")
    responses = sandbox.counters(prefix)["responses"]
    assert responses["create"].get("422", 0) > 0  # the duplicate path was exercised
    assert responses["confirm"].get("422", 0) > 0  # and the already-confirmed path


def test_provider_that_returns_duplicates_still_one_create(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    _forgetful_provider_run(stack, sandbox, producer, ledger, prefix, mode="return")


def test_unknown_provider_status_is_followed_until_final(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    sandbox.reset(processing_seconds=0.2, unknown_status_seconds=1.5, unknown_status_value=9)
    refs = _submit(producer, sandbox, prefix, 3)
    seen_unknown = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = ledger.get_many(refs)
        seen_unknown |= any(r.provider_status == 9 for r in records)
        if all(r.is_final for r in records):
            break
        time.sleep(0.1)
    assert seen_unknown  # the pipeline did see the unknown status and kept going
    records = wait_final(ledger, refs, 5, stack)
    assert {r.state for r in records} == {State.COMPLETED}
    assert all(r.polls >= 3 for r in records)


def test_revoked_tokens_are_refreshed_and_refunds_finish(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    sandbox.reset(processing_seconds=1.0)
    refs = _submit(producer, sandbox, prefix, 10)
    time.sleep(0.5)
    sandbox.revoke_tokens()
    refs += _submit(producer, sandbox, prefix + "b", 10)
    records = wait_final(ledger, refs, 60, stack)
    assert {r.state for r in records} == {State.COMPLETED}
    counters = sandbox.counters(prefix)
    assert (
        counters["responses"]["get"].get("401", 0)
        + counters["responses"]["create"].get("401", 0)
        + counters["responses"]["confirm"].get("401", 0)
        >= 1
    )


def test_worker_killed_with_sigkill_mid_run_every_refund_still_final(
    stack: Stack, sandbox: SandboxAdmin, producer: Producer, ledger: Ledger, prefix: str
) -> None:
    sandbox.reset(latency_ms=150, processing_seconds=0.5)
    refs = _submit(producer, sandbox, prefix, 30)
    time.sleep(1.0)  # steps are in flight: some refunds hold locks and leases
    for worker in stack.alive_workers():
        worker.kill()
    at_kill = ledger.get_many(refs)
    assert sum(not r.is_final for r in at_kill) >= 10  # the kill really was mid-run
    stack.start_worker()
    records = wait_final(ledger, refs, 90, stack)
    assert {r.state for r in records} == {State.COMPLETED}
    assert_one_create_each(sandbox, prefix, refs)
