"""Provider news is checked (issue 10): the steps called directly against the private Redis and the
sandbox over real HTTP. No worker and no beat: each test runs the step it is about and counts the
calls this process's client made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from config.settings import Settings
from refunds import actions, steps, webhooks
from refunds.context import Context, build_context
from refunds.errors import MceError
from refunds.mce.client import idempotency_key
from refunds.models import RefundIntent, State
from refunds.store.ledger import Ledger, record_key
from tests.conftest import SandboxAdmin
from tests.steps.news_helpers import requests_sent


def context(settings: Settings, **changes: Any) -> Context:
    """A Context whose call counter counts only the test's calls: a token cached in Redis by an
    earlier test (and revoked by the sandbox's reset) is replaced here, not by a counted call.

    Confirm runs as a step of its own (``REFUNDS_CONFIRM_INLINE=false``) unless a test says
    otherwise: these cases put news or an operator between a Create and its Confirm."""
    p = build_context(settings.model_copy(update={"confirm_inline": False, **changes}))
    with contextlib.suppress(MceError):
        p.client.get(client_reference="warm-up-no-such-reference")
    p.client.calls.clear()
    return p


def submit(ledger: Ledger, ref: str, **more: Any) -> str:
    intent = RefundIntent.model_validate(
        {
            "originalTransactionType": 1,
            "originalTransactionId": f"tx-{ref}",
            "clientReference": ref,
            **more,
        }
    )
    ledger.submit(intent, due_in=300)
    return ref


def sandbox_refund(p: Context, refund_id: str) -> dict[str, Any]:
    return p.client.get(crypto_refund_id=refund_id).model_dump(by_alias=True)


def test_confirm_is_sent_once_and_the_refund_is_then_polled(
    settings: Settings, ledger: Ledger, sandbox: SandboxAdmin, prefix: str
) -> None:
    p = context(settings)
    sandbox.configure(confirm_async_seconds=1.5)  # Confirm answers status 1 for 1.5 s
    ref = submit(ledger, prefix + "once")
    sandbox.flag([f"tx-{ref}"])
    assert steps.create(p, ref).next_task == "confirm"
    result = steps.confirm(p, ref)
    assert result.record is not None and result.record.state == State.PROCESSING
    assert result.next_task is None  # never nudged again: the timer brings the Get
    for _ in range(100):
        record = ledger.get(ref)
        if record.is_final:
            break
        steps.poll(p, ref)
        time.sleep(0.1)
    assert ledger.get(ref).state == State.COMPLETED
    assert p.client.calls["confirm"] == 1
    assert p.client.calls["create"] == 1


@pytest.mark.parametrize("address", ["T9yED5xMV5ARV98BexN97aLZ1UUq7eKSxm", None])
def test_confirm_sends_the_merchants_address_or_none(
    settings: Settings, ledger: Ledger, sandbox: SandboxAdmin, prefix: str, address: str | None
) -> None:
    p = context(settings)
    sandbox.configure(address_echo=True)  # Create echoes the payer's source address
    ref = submit(ledger, prefix + ("addr" if address else "noaddr"), refundAddress=address)
    sandbox.flag([f"tx-{ref}"])
    steps.create(p, ref)
    steps.confirm(p, ref)
    record = ledger.get(ref)
    assert record.refund_address == address  # the merchant's instruction, unchanged
    assert record.crypto_refund_id is not None
    (sent,) = [
        r["body"]
        for r in requests_sent(sandbox, "confirm")
        if r["body"]["cryptoRefundId"] == record.crypto_refund_id
    ]
    assert sent.get("refundAddress") == address  # what Confirm sent: the merchant's, or none


def test_cancelled_then_the_provider_completes_it_keeps_cancelled_and_marks_a_conflict(
    settings: Settings, ledger: Ledger, sandbox: SandboxAdmin, prefix: str
) -> None:
    p = context(settings)
    # The provider completes the refund 0.5 s after Create whatever the merchant does.
    sandbox.configure(complete_unconfirmed_seconds=0.5)
    ref = submit(ledger, prefix + "cxl")
    sandbox.flag([f"tx-{ref}"])
    steps.create(p, ref)
    actions.cancel(ledger, settings, ref, actor="ann", reason="merchant withdrew it")
    cancelled = ledger.get(ref)
    assert cancelled.crypto_refund_id is not None
    before = p.stats.conflicts().get("completed_after_cancelled", 0)
    time.sleep(0.8)
    event = sandbox_refund(p, cancelled.crypto_refund_id)  # what its webhook carries
    assert event["status"] == 3
    result = webhooks.apply_event(p, prefix + "n-cxl", event)
    assert (result.outcome, result.state) == ("contradiction", "cancelled")
    after = ledger.get(ref)
    assert after.state == State.CANCELLED and after.txn_hash is None
    assert after.conflict is not None
    assert (after.conflict["kind"], after.conflict["providerStatus"]) == (
        "completed_after_cancelled",
        3,
    )
    assert after.conflict["txnHash"] == event["txnHash"]
    assert ref in ledger.conflicted()
    assert p.stats.conflicts()["completed_after_cancelled"] == before + 1


def test_a_held_refund_is_polled_hourly_and_takes_the_providers_rejection(
    settings: Settings, ledger: Ledger, sandbox: SandboxAdmin, prefix: str
) -> None:
    p = context(settings, approval_thresholds={"USDT": Decimal("100")})
    ref = submit(ledger, prefix + "held")
    sandbox.flag([f"tx-{ref}"], amount="500.00", currency="USDT")
    steps.create(p, ref)
    held = ledger.get(ref)
    assert held.state == State.AWAITING_APPROVAL
    due = ledger.due_at(ref)
    assert due is not None and due > time.time() + 3500  # polled hourly, not never
    polled = steps.poll(p, ref)  # what the timer dispatches for a held refund
    assert polled.record is not None and polled.record.state == State.AWAITING_APPROVAL
    assert p.client.calls["get"] == 1 and p.client.calls["confirm"] == 0
    event = {"cryptoRefundId": held.crypto_refund_id, "clientReference": ref, "status": 5}
    result = webhooks.apply_event(p, prefix + "n-held", event)
    assert (result.outcome, result.state) == ("applied", "rejected")


def test_approval_is_recorded_as_fields(
    settings: Settings, ledger: Ledger, sandbox: SandboxAdmin, prefix: str
) -> None:
    strict = settings.model_copy(update={"approval_thresholds": {"USDT": Decimal("100")}})
    p = context(settings, approval_thresholds={"USDT": Decimal("100")})
    ref = submit(ledger, prefix + "appr")
    sandbox.flag([f"tx-{ref}"], amount="500.00", currency="USDT")
    steps.create(p, ref)
    approved = actions.approve(ledger, strict, ref, actor="bob", reason="checked").record
    assert approved.approved_by == "bob"
    assert approved.approved_at is not None and abs(approved.approved_at - time.time()) < 5


def test_not_found_right_after_create_is_read_lag_then_permanent(
    settings: Settings, ledger: Ledger, prefix: str
) -> None:
    p = context(settings, not_found_grace_seconds=120.0)
    ref = submit(ledger, prefix + "lag")
    record = ledger.transition(ledger.get(ref), State.CREATING, "create attempt 1")
    record = ledger.transition(
        record,
        State.PROCESSING,
        "confirmed",
        fields={"crypto_refund_id": "CR" + "0" * 20, "provider_seen_at": time.time()},
        timer="set",
        due=time.time() + 1,
    )
    result = steps.poll(p, ref)
    assert result.record is not None and result.record.state == State.PROCESSING
    assert result.record.last_error is not None
    assert result.record.last_error["code"] == "CRYPTO_REFUND_NOT_FOUND"
    assert ledger.due_at(ref) is not None  # retried on the timer
    # Past the window, the same answer is permanent.
    late = ledger.transition(
        ledger.get(ref), State.PROCESSING, "", fields={"provider_seen_at": time.time() - 600}
    )
    assert late.state == State.PROCESSING
    stopped = steps.poll(p, ref)
    assert stopped.record is not None and stopped.record.state == State.NEEDS_ATTENTION


def test_a_retry_with_a_new_key_generation_adopts_the_providers_refund_instead_of_creating(
    settings: Settings, ledger: Ledger, sandbox: SandboxAdmin, prefix: str
) -> None:
    p = context(settings)
    ref = submit(ledger, prefix + "adopt")
    sandbox.flag([f"tx-{ref}"])
    # An ambiguous Create: the provider made the refund, the answer was lost.
    made = p.client.create(
        original_transaction_type=1,
        original_transaction_id=f"tx-{ref}",
        client_reference=ref,
        key=idempotency_key("create", ref, 0),
    )
    stuck = ledger.transition(ledger.get(ref), State.CREATING, "create attempt 1")
    ledger.transition(stuck, State.NEEDS_ATTENTION, "gave up after 60 attempts: timeout")
    before = dict(p.client.calls)
    retried = actions.retry(ledger, settings, ref, actor="ann", reason="provider is back")
    assert retried.record.state == State.RECEIVED and retried.record.key_generation == 1
    result = steps.create(p, ref)
    record = ledger.get(ref)
    assert record.crypto_refund_id == made.crypto_refund_id
    assert record.state == State.CREATED and result.next_task == "confirm"
    assert p.client.calls["create"] == before["create"]  # nothing re-Created
    assert p.client.calls["get"] == before.get("get", 0) + 1  # one look-up by clientReference
    effects = sandbox.counters(ref)["effects"].get(ref, {})
    assert effects.get("create", 0) == 1


def test_the_tick_skips_and_logs_a_state_it_does_not_know(
    settings: Settings,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    prefix: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from tasks import schedule  # noqa: PLC0415 - imports the Celery app, which reads the env

    own_db = env["REDIS_URL"].rsplit("/", 1)[0] + "/13"  # a database no worker or beat ticks
    p = context(settings, redis_url=own_db)
    p.ledger.redis.flushdb()
    good = submit(p.ledger, prefix + "good")
    odd = submit(p.ledger, prefix + "odd")
    p.ledger.redis.hset(record_key(odd), "state", "frozen_by_a_newer_release")
    for ref in (good, odd):
        p.ledger.set_due(ref, time.time() - 1)
    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr(schedule, "current_context", lambda: p)
    fake = SimpleNamespace(apply_async=sent.append)
    monkeypatch.setitem(schedule.TASKS, "create", fake)
    with caplog.at_level(logging.ERROR, logger="refunds.schedule"):
        handed = schedule.tick()
    assert handed == 1 and sent == [(good, 1)]  # the known refund moves on, fenced (dispatch 1)
    assert any("frozen_by_a_newer_release" in r.getMessage() for r in caplog.records)
    assert p.ledger.due_at(odd) is not None  # kept (leased) for a release that knows the state
    p.ledger.redis.flushdb()


def test_conflicts_are_listed_and_counted_by_the_cli(
    settings: Settings, env: dict[str, str], prefix: str
) -> None:
    own_db = env["REDIS_URL"].rsplit("/", 1)[0] + "/13"
    p = context(settings, redis_url=own_db)
    p.ledger.redis.flushdb()
    calm, marked = submit(p.ledger, prefix + "calm"), submit(p.ledger, prefix + "marked")
    rec = p.ledger.transition(p.ledger.get(marked), State.CANCELLED, "cancelled: test")
    event = {"cryptoRefundId": "CRZ", "clientReference": marked, "status": 3}
    assert webhooks.apply_event(p, prefix + "n-cli", event).outcome == "contradiction"
    assert rec.state == State.CANCELLED
    cli_env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "TMPDIR", "REFUNDS_DATABASE_URL")
        },
        "REDIS_URL": own_db,
        "REFUNDS_PROFILE": "sandbox",
    }
    command = [sys.executable, "-m", "refunds.cli"]

    def run(*args: str) -> Any:
        done = subprocess.run(
            [*command, *args, "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    listed = run("list", "--conflicts")
    assert [r["clientReference"] for r in listed] == [marked]
    assert listed[0]["conflict"]["kind"] == "completed_after_cancelled"
    assert calm in [r["clientReference"] for r in run("list")]
    stats = run("stats")
    assert stats["conflicts"]["count"] == 1
    assert stats["conflicts"]["kinds"]["completed_after_cancelled"] >= 1
    p.ledger.redis.flushdb()
