"""Operator actions end to end: the approval hold, approve, retry and cancel on a live cluster.

A dedicated worker and beat run on database 7 of the private Redis with an approval policy
(``REFUNDS_APPROVAL_THRESHOLDS=USDT=100``), against the session's sandbox. Database 8 has no worker
at all: refunds submitted there stay ``received``, which is how a cancel before any worker touched
the refund is exercised. Each action is called as the CLI calls it
(``refunds.actions.<action>(ledger, settings, ref, actor=..., reason=...)``) and the returned
nudge is sent the way an operator's tool sends it.

The lease is 30 s here (the session's is 12 s), so a refund that completes within 20 s of an
approval or a retry was moved by the nudge, not by its safety-net timer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest

from config.settings import Settings, load_settings
from devstack.processes import Child, start_beat, start_worker, wait_for_worker
from refunds import actions
from refunds.context import build_context
from refunds.errors import McePermanentError, OperatorActionError
from refunds.mce.client import idempotency_key
from refunds.mce.contract import Code
from refunds.models import RefundRecord, State
from refunds.producer import Producer
from refunds.store.ledger import OUTBOX, Ledger
from tests.conftest import TEST_ENV, RedisDatabases, SandboxAdmin
from tests.integration.test_pipeline import assert_history_follows_table

LEASE = 30.0
THRESHOLDS = "USDT=100"
ACTOR = "ops-alice"


@dataclass
class Cluster:
    url: str
    settings: Settings
    ledger: Ledger
    producer: Producer

    def submit(
        self, sandbox: SandboxAdmin, ref: str, amount: str = "50.00", *, flag: bool = True
    ) -> str:
        txn = f"tx-{ref}"
        if flag:
            sandbox.flag([txn], amount=amount, currency="USDT")
        self.producer.submit(
            {"originalTransactionType": 1, "originalTransactionId": txn, "clientReference": ref}
        )
        return ref

    def nudge(self, ref: str, result: actions.ActionResult) -> None:
        """What an operator's tool does with an action's result."""
        assert result.next_task is not None
        self.producer.celery.send_task("refunds." + result.next_task, args=[ref])


def _settings(url: str, base_url: str) -> Settings:
    return load_settings(
        profile="sandbox",
        redis_url=url,
        mce_base_url=base_url,
        approval_thresholds=THRESHOLDS,
        lease_seconds=LEASE,
        http_connect_timeout=float(TEST_ENV["REFUNDS_HTTP_CONNECT_TIMEOUT"]),
        http_read_timeout=float(TEST_ENV["REFUNDS_HTTP_READ_TIMEOUT"]),
        task_soft_time_limit=float(TEST_ENV["REFUNDS_TASK_SOFT_TIME_LIMIT"]),
        task_time_limit=float(TEST_ENV["REFUNDS_TASK_TIME_LIMIT"]),
    )


@pytest.fixture(scope="module")
def cluster(
    redis_dbs: RedisDatabases, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A worker and beat with the approval policy, on their own database."""
    url = redis_dbs.take()
    logdir = tmp_path_factory.mktemp("operator-logs")
    worker_env = {
        **env,
        "REDIS_URL": url,
        "REFUNDS_APPROVAL_THRESHOLDS": THRESHOLDS,
        "REFUNDS_LEASE_SECONDS": str(LEASE),
    }
    children: list[Child] = []
    try:
        children.append(start_worker(logdir, worker_env, name="approvals", concurrency=4))
        wait_for_worker(children[0])
        children.append(start_beat(logdir, worker_env, name="approvals-beat"))
        settings = _settings(url, env["MCE_BASE_URL"])
        ledger = Ledger.from_url(url)
        yield Cluster(url, settings, ledger, Producer(settings, ledger=ledger))
    finally:
        for child in children:
            child.stop()
        redis_dbs.give_back(url)


@pytest.fixture
def idle(redis_db: str, env: dict[str, str]) -> Cluster:
    """A database nobody consumes: submitted refunds stay ``received`` until the test acts.

    ``redis_db`` flushes it after the test: the queued refunds.create nudges do not outlive it."""
    settings = _settings(redis_db, env["MCE_BASE_URL"])
    ledger = Ledger.from_url(redis_db)
    return Cluster(redis_db, settings, ledger, Producer(settings, ledger=ledger))


def wait_state(
    ledger: Ledger, ref: str, states: Iterable[State], timeout: float = 30.0
) -> RefundRecord:
    wanted = set(states)
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = ledger.find(ref)
        if record is not None and record.state in wanted:
            return record
        time.sleep(0.1)
    seen = None if record is None else (record.state, record.last_error)
    raise AssertionError(f"{ref} not in {sorted(wanted)} after {timeout}s (last seen: {seen})")


def effects(sandbox: SandboxAdmin, ref: str) -> dict[str, int]:
    found: dict[str, int] = sandbox.counters(ref)["effects"].get(ref, {})
    return {"create": found.get("create", 0), "confirm": found.get("confirm", 0)}


def assert_unchanged(ledger: Ledger, before: RefundRecord) -> None:
    after = ledger.get(before.client_reference)
    assert after.state == before.state
    assert after.version == before.version
    assert after.history == before.history


def entry_to(record: RefundRecord, state: State) -> list[tuple[str, str]]:
    return [(h.actor, h.reason) for h in record.history if h.to_state == state]


# --- the approval policy and approve ------------------------------------------------------------


def test_refund_above_threshold_is_held_after_create_and_one_below_completes_alone(
    cluster: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    big = cluster.submit(sandbox, f"{prefix}big", "500.00")
    small = cluster.submit(sandbox, f"{prefix}small", "50.00")

    done = wait_state(cluster.ledger, small, [State.COMPLETED, State.NEEDS_ATTENTION], 30)
    assert done.state == State.COMPLETED and done.txn_hash
    held = wait_state(cluster.ledger, big, [State.AWAITING_APPROVAL, State.NEEDS_ATTENTION], 30)
    assert held.state == State.AWAITING_APPROVAL
    assert held.crypto_refund_id and held.crypto_refund_id.startswith("CR")
    assert str(held.amount) == "500.00" and held.currency == "USDT"
    assert "approval threshold" in held.history[-1].reason
    # Held for a human, and read slowly (hourly) so it cannot drift from the provider.
    due = cluster.ledger.due_at(big)
    assert due is not None and due > time.time() + 3000

    # It stays held: beat ticks several times and nothing confirms it at the provider.
    time.sleep(1.5)
    assert cluster.ledger.get(big).version == held.version
    assert effects(sandbox, big) == {"create": 1, "confirm": 0}
    assert effects(sandbox, small) == {"create": 1, "confirm": 1}


def test_approve_releases_a_held_refund_to_completed_with_actor_and_reason(
    cluster: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = cluster.submit(sandbox, f"{prefix}big", "500.00")
    wait_state(cluster.ledger, ref, [State.AWAITING_APPROVAL], 30)

    result = actions.approve(
        cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="merchant called, verified"
    )
    assert result.next_task == "confirm"
    assert result.record.state == State.CONFIRMING
    started = time.monotonic()
    cluster.nudge(ref, result)

    record = wait_state(cluster.ledger, ref, [State.COMPLETED, State.NEEDS_ATTENTION], 20)
    assert record.state == State.COMPLETED, record.last_error
    assert time.monotonic() - started < LEASE  # the nudge moved it, not the safety-net timer
    assert record.txn_hash and record.provider_status == 3
    assert entry_to(record, State.CONFIRMING)[0] == (ACTOR, "approved: merchant called, verified")
    assert_history_follows_table(record)
    assert [h.to_state for h in record.history][-4:] == [
        "awaiting_approval",
        "confirming",
        "processing",
        "completed",
    ]
    assert effects(sandbox, ref) == {"create": 1, "confirm": 1}


def test_approve_of_a_refund_that_is_not_held_is_refused_and_changes_nothing(
    cluster: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = cluster.submit(sandbox, f"{prefix}small", "50.00")
    before = wait_state(cluster.ledger, ref, [State.COMPLETED], 30)

    with pytest.raises(OperatorActionError) as info:
        actions.approve(cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="looks fine")
    assert str(info.value) == f"cannot approve {ref}: it is completed, not awaiting_approval"
    assert info.value.action == "approve" and info.value.client_reference == ref
    assert_unchanged(cluster.ledger, before)


# --- retry --------------------------------------------------------------------------------------


def test_retry_after_the_payment_is_flagged_completes_under_a_new_idempotency_key(
    cluster: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = cluster.submit(sandbox, f"{prefix}late", flag=False)  # not pending at the provider yet
    stuck = wait_state(cluster.ledger, ref, [State.NEEDS_ATTENTION, State.COMPLETED], 30)
    assert stuck.state == State.NEEDS_ATTENTION
    assert stuck.last_error and stuck.last_error["code"] == Code.NOT_PENDING
    assert cluster.ledger.due_at(ref) is None
    assert effects(sandbox, ref) == {"create": 0, "confirm": 0}

    # MCE's KYT flags the payment now. The old key would only replay the stored refusal:
    sandbox.flag([f"tx-{ref}"], amount="20.00", currency="USDT")
    client = build_context(cluster.settings).client
    with pytest.raises(McePermanentError) as replay:
        client.create(
            original_transaction_type=1,
            original_transaction_id=f"tx-{ref}",
            client_reference=ref,
            key=idempotency_key("create", ref, stuck.key_generation),
        )
    assert replay.value.code == Code.NOT_PENDING
    assert effects(sandbox, ref)["create"] == 0

    result = actions.retry(
        cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="payment flagged now"
    )
    assert result.record.state == State.RECEIVED
    assert result.record.key_generation == stuck.key_generation + 1
    assert result.next_task == "create"
    cluster.nudge(ref, result)

    record = wait_state(cluster.ledger, ref, [State.COMPLETED, State.NEEDS_ATTENTION], 20)
    assert record.state == State.COMPLETED, record.last_error
    assert record.last_error is None and record.txn_hash
    actor, line = entry_to(record, State.RECEIVED)[-1]
    assert actor == ACTOR and line.startswith("retried: payment flagged now; previous error: {")
    assert effects(sandbox, ref) == {"create": 1, "confirm": 1}


def test_retry_of_a_refund_that_does_not_need_attention_is_refused(
    cluster: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = cluster.submit(sandbox, f"{prefix}small", "50.00")
    before = wait_state(cluster.ledger, ref, [State.COMPLETED], 30)
    with pytest.raises(OperatorActionError) as info:
        actions.retry(cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="again")
    assert "it is completed; only needs_attention refunds are retried" in str(info.value)
    assert_unchanged(cluster.ledger, before)


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_of_a_held_refund_makes_it_final_without_a_timer_or_a_confirm(
    cluster: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = cluster.submit(sandbox, f"{prefix}big", "500.00")
    wait_state(cluster.ledger, ref, [State.AWAITING_APPROVAL], 30)

    result = actions.cancel(
        cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="merchant withdrew the refund"
    )
    assert result.next_task is None
    record = result.record
    assert record.state == State.CANCELLED and record.is_final
    assert record.history[-1].from_state == State.AWAITING_APPROVAL
    assert (record.history[-1].actor, record.history[-1].reason) == (
        ACTOR,
        "cancelled: merchant withdrew the refund",
    )
    assert cluster.ledger.due_at(ref) is None
    # No notification channel is configured here: the outcome entry is queued whatever the
    # writer, and the worker, configuring no channel either, drops it (no channel entry made).
    assert cluster.ledger.redis.zscore(OUTBOX, f"task:{ref}") is None

    time.sleep(1.5)  # beat keeps ticking: the cancelled refund stays as it is
    assert cluster.ledger.get(ref).version == record.version
    assert effects(sandbox, ref) == {"create": 1, "confirm": 0}


def test_cancel_after_confirm_is_refused_as_the_providers_refund_to_finish(
    cluster: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    # Approved (so Confirm may be under way), not yet nudged: cancelling is no longer ours to do.
    ref = cluster.submit(sandbox, f"{prefix}big", "500.00")
    wait_state(cluster.ledger, ref, [State.AWAITING_APPROVAL], 30)
    result = actions.approve(cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="ok")
    with pytest.raises(OperatorActionError) as info:
        actions.cancel(cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="changed mind")
    assert "it is the provider's refund to finish" in str(info.value)
    assert_unchanged(cluster.ledger, result.record)
    cluster.nudge(ref, result)

    # Processing at the provider (a slow chain this time).
    sandbox.configure(processing_seconds=4.0)
    slow = cluster.submit(sandbox, f"{prefix}slow", "50.00")
    processing = wait_state(cluster.ledger, slow, [State.PROCESSING], 30)
    with pytest.raises(OperatorActionError) as info:
        actions.cancel(cluster.ledger, cluster.settings, slow, actor=ACTOR, reason="too slow")
    assert str(info.value) == (
        f"cannot cancel {slow}: it was (or may have been) confirmed at the provider; "
        "it is the provider's refund to finish"
    )
    after = cluster.ledger.get(slow)
    assert after.state == State.PROCESSING and after.history == processing.history

    # Completed: final, and said so.
    done = wait_state(cluster.ledger, ref, [State.COMPLETED, State.NEEDS_ATTENTION], 20)
    assert done.state == State.COMPLETED, done.last_error
    with pytest.raises(OperatorActionError) as info:
        actions.cancel(cluster.ledger, cluster.settings, ref, actor=ACTOR, reason="too late")
    assert str(info.value) == f"cannot cancel {ref}: it is already final (completed)"
    assert_unchanged(cluster.ledger, done)

    record = wait_state(cluster.ledger, slow, [State.COMPLETED, State.NEEDS_ATTENTION], 20)
    assert record.state == State.COMPLETED, record.last_error
    assert effects(sandbox, ref) == effects(sandbox, slow) == {"create": 1, "confirm": 1}


def test_cancel_of_a_received_refund_before_any_worker_touched_it(
    idle: Cluster, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = idle.submit(sandbox, f"{prefix}early", "50.00")
    before = idle.ledger.get(ref)
    assert before.state == State.RECEIVED
    assert idle.ledger.due_at(ref) is not None  # its safety-net timer

    # Neither approve nor retry applies to it.
    with pytest.raises(OperatorActionError, match="it is received, not awaiting_approval"):
        actions.approve(idle.ledger, idle.settings, ref, actor=ACTOR, reason="x")
    with pytest.raises(OperatorActionError, match="only needs_attention refunds are retried"):
        actions.retry(idle.ledger, idle.settings, ref, actor=ACTOR, reason="x")
    assert_unchanged(idle.ledger, before)

    result = actions.cancel(idle.ledger, idle.settings, ref, actor=ACTOR, reason="duplicate")
    assert result.next_task is None
    assert result.record.state == State.CANCELLED
    assert result.record.history[-1].from_state == State.RECEIVED
    assert (result.record.history[-1].actor, result.record.history[-1].reason) == (
        ACTOR,
        "cancelled: duplicate",
    )
    assert idle.ledger.due_at(ref) is None
    assert idle.ledger.references(State.RECEIVED) == []
    assert idle.ledger.references(State.CANCELLED) == [ref]
    assert effects(sandbox, ref) == {"create": 0, "confirm": 0}

    with pytest.raises(OperatorActionError, match=r"it is already final \(cancelled\)"):
        actions.cancel(idle.ledger, idle.settings, ref, actor=ACTOR, reason="again")


@pytest.mark.parametrize("action", ["approve", "retry", "cancel"])
@pytest.mark.parametrize(
    "words",
    [
        ("", "a reason", "say who you are"),
        ("   ", "a reason", "say who you are"),
        (ACTOR, "", "say why"),
        (ACTOR, " \t", "say why"),
    ],
    ids=["no-actor", "blank-actor", "no-reason", "blank-reason"],
)
def test_an_action_without_actor_or_reason_is_refused_and_changes_nothing(
    idle: Cluster, sandbox: SandboxAdmin, prefix: str, action: str, words: tuple[str, str, str]
) -> None:
    actor, reason, message = words
    ref = idle.submit(sandbox, f"{prefix}r", "50.00")
    before = idle.ledger.get(ref)
    with pytest.raises(OperatorActionError, match=message) as info:
        actions.ACTIONS[action](idle.ledger, idle.settings, ref, actor=actor, reason=reason)
    assert info.value.action == action
    assert_unchanged(idle.ledger, before)
