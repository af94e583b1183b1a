"""Parked webhooks are replayed after every step and operator action, and none can be parked after
the last replay (issue 10, "What to build"); the tick skips a state it does not know (case 7)."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps, webhooks
from refunds.context import Context
from refunds.models import State
from refunds.store.keys import record_key
from tests.steps.conftest import received
from tests.steps.news_helpers import deliver, provider_view


class Sent:
    """Stands in for a Celery task's ``apply_async``: records the nudges instead of queueing them
    on a broker (these tests run the steps in-process; the broker is not theirs)."""

    def __init__(self, name: str, into: list[tuple[str, str]]) -> None:
        self.name, self.into = name, into

    def apply_async(self, args: tuple[str, ...]) -> None:
        self.into.append((self.name, args[0]))


def celery_env(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the Celery app reads when first imported: this test's private Redis and
    sandbox, never the shared Redis."""
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    monkeypatch.setenv("REDIS_URL", ctx.settings.redis_url)
    monkeypatch.setenv("MCE_BASE_URL", str(ctx.settings.mce_base_url))


@pytest.fixture
def nudges(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """``tasks.refunds.run_step`` against ``ctx``, its nudges recorded (name, reference)."""
    celery_env(ctx, monkeypatch)
    from tasks import refunds as task_module  # noqa: PLC0415 - imports the Celery app

    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(task_module, "current_context", lambda: ctx)
    for name in ("create", "confirm", "poll"):
        monkeypatch.setitem(task_module.TASKS, name, Sent(name, sent))
    return sent


def test_an_event_parked_before_create_is_applied_by_the_replay_after_the_step(
    ctx: Context, sandbox: SandboxAdmin, nudges: list[tuple[str, str]]
) -> None:
    from tasks.refunds import run_step  # noqa: PLC0415

    sandbox.configure(processing_seconds=30)
    received(ctx, sandbox, "early")
    # The provider's refund exists (our Create's answer is still on its way) and its first
    # webhook arrives while the ledger still says "received": parked.
    made = ctx.client.create(
        original_transaction_type=1,
        original_transaction_id="tx-early",
        client_reference="early",
        key="create:early:0",
    )
    ctx.client.confirm(crypto_refund_id=made.crypto_refund_id, refund_address=None, key="c-early")
    news = {**provider_view(ctx, made.crypto_refund_id), "status": 2}
    assert deliver(ctx, "n-early", news).outcome == "parked"
    assert ctx.events.parked("early") == ["n-early"]
    run_step("create", "early")
    assert ctx.events.parked("early") == []
    assert ctx.events.get("n-early")["status"] == "applied"
    assert ctx.ledger.get("early").state == State.PROCESSING
    assert ("confirm", "early") not in nudges  # the provider says confirmed: never re-Confirmed


def test_an_event_parked_before_an_operator_cancel_is_replayed_by_the_action(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """Parked while "received"; the operator cancels; the replay after the action finds that the
    provider completed it: the record stays cancelled and carries the conflict mark."""
    received(ctx, sandbox, "cx-parked")
    news = {
        "cryptoRefundId": "CR" + "7" * 20,
        "clientReference": "cx-parked",
        "originalTransactionType": 1,
        "originalTransactionId": "tx-cx-parked",
        "status": 3,
        "txnHash": "0x" + "cd" * 32,
    }
    assert deliver(ctx, "n-cx-parked", news).outcome == "parked"
    result = actions.cancel(ctx.ledger, ctx.settings, "cx-parked", actor="ann", reason="withdrawn")
    assert result.record.state == State.CANCELLED
    assert result.record.conflict is not None
    assert result.record.conflict["kind"] == "completed_after_cancelled"
    assert ctx.events.parked("cx-parked") == []
    assert ctx.events.get("n-cx-parked")["status"] == "contradiction"


def test_a_parked_event_whose_replay_fails_is_kept_and_the_others_still_apply(
    ctx: Context,
    sandbox: SandboxAdmin,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two events parked while "received"; the first one's replay meets a Redis blip. It is not
    lost: marked with its error, logged, parked again, and applied by the next replay; the second
    one is applied by the same replay that failed on the first."""
    sandbox.configure(processing_seconds=30)
    received(ctx, sandbox, "blip")
    made = ctx.client.create(
        original_transaction_type=1,
        original_transaction_id="tx-blip",
        client_reference="blip",
        key="create:blip:0",
    )
    ctx.client.confirm(crypto_refund_id=made.crypto_refund_id, refund_address=None, key="c-blip")
    news = {**provider_view(ctx, made.crypto_refund_id), "status": 2}
    assert deliver(ctx, "n-blip-1", news).outcome == "parked"
    assert deliver(ctx, "n-blip-2", news).outcome == "parked"
    assert ctx.events.parked("blip") == ["n-blip-1", "n-blip-2"]
    steps.create(ctx, "blip")  # the record moves on (replayed by hand below)
    assert ctx.ledger.get("blip").state == State.PROCESSING

    find = ctx.ledger.find
    blips = [redis.exceptions.ConnectionError("Connection reset by peer")]

    def flaky_find(ref: str) -> Any:
        if blips:
            raise blips.pop()
        return find(ref)

    monkeypatch.setattr(ctx.ledger, "find", flaky_find)
    with caplog.at_level(logging.ERROR, logger="refunds.webhooks"):
        replayed = webhooks.replay_parked(ctx, "blip")
    assert [r.state for r in replayed] == ["processing"]  # the second one, applied
    assert ctx.events.get("n-blip-2")["status"] in ("applied", "stale")
    assert ctx.events.parked("blip") == ["n-blip-1"]  # kept for the next replay
    stored = ctx.events.get("n-blip-1")
    assert stored["status"] == "error" and "Connection reset by peer" in stored["error"]
    assert any("parked again" in r.getMessage() for r in caplog.records)

    again = webhooks.replay_parked(ctx, "blip")
    assert [r.state for r in again] == ["processing"]
    assert ctx.events.parked("blip") == []
    assert ctx.events.get("n-blip-1")["status"] in ("applied", "stale")


def test_no_event_is_parked_against_a_record_that_moved_since_it_was_read(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    """The race the version check closes: the event was tried against version v, a step moved the
    record (and replayed) before the event was parked. Parking at v is refused; at the record's
    current version it is accepted; against no record only while there is none."""
    received(ctx, sandbox, "race")
    seen = ctx.ledger.get("race")
    moved = ctx.ledger.transition(seen, State.CREATING, "create attempt 1")
    assert moved.version == seen.version + 1
    assert ctx.events.park("n-race", "race", time.time(), seen.version) is False
    assert ctx.events.parked("race") == []
    assert ctx.events.park("n-race", "race", time.time(), None) is False  # it exists now
    assert ctx.events.park("n-race", "race", time.time(), moved.version) is True
    assert ctx.events.parked("race") == ["n-race"]
    assert ctx.events.park("n-gone", "never-submitted", time.time(), None) is True


def test_the_tick_skips_and_logs_a_state_it_does_not_know(
    ctx: Context,
    sandbox: SandboxAdmin,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    celery_env(ctx, monkeypatch)
    from tasks import schedule  # noqa: PLC0415 - imports the Celery app

    for ref in ("good", "odd"):
        received(ctx, sandbox, ref)
        ctx.ledger.set_due(ref, time.time() - 1)
    ctx.ledger.redis.hset(record_key("odd"), "state", "frozen_by_a_newer_release")
    sent: list[Any] = []
    monkeypatch.setattr(schedule, "current_context", lambda: ctx)
    monkeypatch.setitem(schedule.TASKS, "create", SimpleNamespace(apply_async=sent.append))
    with caplog.at_level(logging.ERROR, logger="refunds.schedule"):
        handed = schedule.tick()
    # every other refund still moves on, with its dispatch fence
    assert handed == 1 and [args[0] for args in sent] == ["good"]
    assert any("frozen_by_a_newer_release" in r.getMessage() for r in caplog.records)
    assert ctx.ledger.due_at("odd") is not None  # kept for a release that knows the state
