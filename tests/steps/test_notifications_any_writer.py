"""Notifications do not depend on the process that writes the final state.

The web process applies webhooks and the CLI replays parked events, each with its own settings;
a process without the notification settings must still queue the outcome. The outbox entry is
written with every final transition; the worker that delivers it decides the channels from its
own settings.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, steps
from refunds.models import State
from tests.steps.conftest import make_context, received
from tests.steps.merchant_helpers import Merchant, deliver_outbox
from tests.steps.news_helpers import deliver, provider_view


@pytest.fixture
def merchant() -> Iterator[Merchant]:
    yield from Merchant.serving()


def test_a_final_webhook_applied_by_a_process_without_notification_settings_is_told(
    redis_db: str, sandbox: SandboxAdmin, merchant: Merchant
) -> None:
    web = make_context(redis_db, sandbox)  # no REFUNDS_CALLBACK_URL, no REFUNDS_NOTIFY_TASK
    worker = make_context(
        redis_db, sandbox, callback_url=merchant.url, callback_secret="merchant-secret"
    )
    sandbox.configure(processing_seconds=30)
    received(worker, sandbox, "any-writer")
    steps.create(worker, "any-writer")
    record = worker.ledger.get("any-writer")
    assert record.crypto_refund_id is not None
    news = {**provider_view(worker, record.crypto_refund_id), "status": 3, "txnHash": "0xabc"}
    assert deliver(web, "n-any-writer", news).outcome == "applied"
    assert web.ledger.get("any-writer").state == State.COMPLETED
    deliver_outbox(worker)
    told = [b for b in merchant.bodies if b["clientReference"] == "any-writer"]
    assert [(b["eventType"], b["state"]) for b in told] == [("refund.final", "completed")]


def test_a_cancel_from_a_shell_without_notification_settings_is_told(
    redis_db: str, sandbox: SandboxAdmin, merchant: Merchant
) -> None:
    shell = make_context(redis_db, sandbox)
    worker = make_context(
        redis_db, sandbox, callback_url=merchant.url, callback_secret="merchant-secret"
    )
    received(worker, sandbox, "shell-cancel")
    actions.cancel(shell.ledger, shell.settings, "shell-cancel", actor="ann", reason="withdrawn")
    deliver_outbox(worker)
    assert [b["state"] for b in merchant.bodies] == ["cancelled"]


def test_an_outcome_is_dropped_with_a_note_by_a_worker_with_no_channel(
    redis_db: str, sandbox: SandboxAdmin
) -> None:
    worker = make_context(redis_db, sandbox)
    received(worker, sandbox, "no-channel")
    actions.cancel(worker.ledger, worker.settings, "no-channel", actor="ann", reason="x")
    assert worker.outbox.count() == 1
    assert deliver_outbox(worker) == ["no notification channel configured: not sent"]
    assert worker.outbox.count() == 0
