"""A refund MCE completes after we told the merchant it was cancelled (or failed) is loud.

The final state is kept and the record marked, as before; now the merchant is also told of the
contradiction (a ``refund.contradiction`` notification with the kind and MCE's evidence), the
contradiction is counted by kind in ``/metrics``, and the health probe is red until an operator
acknowledges it (``refunds conflicts ack``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from devstack.sandbox_admin import SandboxAdmin
from refunds import actions, conflicts, steps
from refunds.cli import cli
from refunds.context import Context
from refunds.models import State
from refunds.ops import health
from refunds.ops.metrics import render_metrics
from tests.steps.conftest import make_context, received
from tests.steps.merchant_helpers import Merchant, deliver_outbox
from tests.steps.news_helpers import deliver, provider_view

TXN_HASH = "0x" + "cd" * 32


@pytest.fixture
def merchant() -> Iterator[Merchant]:
    yield from Merchant.serving()


@pytest.fixture
def worker(redis_db: str, sandbox: SandboxAdmin, merchant: Merchant) -> Context:
    return make_context(
        redis_db,
        sandbox,
        confirm_inline=False,
        callback_url=merchant.url,
        callback_secret="merchant-secret",
    )


@pytest.fixture
def probe_env(redis_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The health probe's and the CLI's environment: this test's Redis, the sandbox profile."""
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    monkeypatch.setenv("REDIS_URL", redis_db)


def completed_after_cancel(worker: Context, sandbox: SandboxAdmin, ref: str) -> None:
    """Cancelled before Confirm (the merchant is told), then MCE says it completed it."""
    received(worker, sandbox, ref)
    created = steps.create(worker, ref).record
    assert created is not None and created.crypto_refund_id is not None
    actions.cancel(worker.ledger, worker.settings, ref, actor="ann", reason="withdrawn")
    deliver_outbox(worker)
    news = {**provider_view(worker, created.crypto_refund_id), "status": 3, "txnHash": TXN_HASH}
    assert deliver(worker, f"n-{ref}", news).outcome == "contradiction"


def test_the_merchant_told_cancelled_is_told_of_the_contradiction_with_evidence(
    worker: Context, sandbox: SandboxAdmin, merchant: Merchant
) -> None:
    completed_after_cancel(worker, sandbox, "told-twice")
    deliver_outbox(worker)
    kinds = [(b["eventType"], b["state"]) for b in merchant.bodies]
    assert kinds == [("refund.final", "cancelled"), ("refund.contradiction", "cancelled")]
    told = merchant.bodies[1]
    assert told["contradiction"]["kind"] == "completed_after_cancelled"
    assert told["contradiction"]["providerStatus"] == 3
    assert told["contradiction"]["txnHash"] == TXN_HASH
    assert told["notificationId"] != merchant.bodies[0]["notificationId"]
    assert worker.ledger.get("told-twice").state == State.CANCELLED  # kept
    # The same news again (MCE redelivers under a new id) does not tell the merchant twice.
    record = worker.ledger.get("told-twice")
    assert record.crypto_refund_id is not None
    again = {**provider_view(worker, record.crypto_refund_id), "status": 3, "txnHash": TXN_HASH}
    deliver(worker, "n-told-twice-2", again)
    deliver_outbox(worker)
    assert len(merchant.bodies) == 2


def test_a_contradiction_is_counted_by_kind_and_health_is_red_until_acknowledged(
    worker: Context, sandbox: SandboxAdmin, probe_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert health.main([]) == 0
    completed_after_cancel(worker, sandbox, "loud")
    body = render_metrics(worker)[0].decode()
    assert 'refunds_conflicts_seen_total{kind="completed_after_cancelled"} 1.0' in body
    assert "\nrefunds_conflicts 1.0" in body  # unacknowledged (the RefundsConflict alert's)
    capsys.readouterr()
    assert health.main([]) == 1
    assert "1 refund(s) where MCE contradicts" in capsys.readouterr().err

    with pytest.raises(Exception, match="say why"):
        conflicts.acknowledge(worker.ledger, "loud", actor="ann", reason=" ")
    record = conflicts.acknowledge(worker.ledger, "loud", actor="ann", reason="refunded twice")
    assert record.conflict is not None
    assert record.conflict["acknowledgedBy"] == "ann"
    assert record.conflict["kind"] == "completed_after_cancelled"  # the evidence stays
    assert health.main([]) == 0
    assert "\nrefunds_conflicts 0.0" in render_metrics(worker)[0].decode()


def test_refunds_conflicts_ack_on_the_command_line(
    worker: Context, sandbox: SandboxAdmin, probe_env: None
) -> None:
    completed_after_cancel(worker, sandbox, "cli-ack")
    runner = CliRunner()
    listed = runner.invoke(cli, ["conflicts", "list"])
    assert listed.exit_code == 0 and "cli-ack" in listed.output
    assert "completed_after_cancelled" in listed.output
    acked = runner.invoke(cli, ["conflicts", "ack", "cli-ack", "--by", "ann", "--reason", "ok"])
    assert acked.exit_code == 0, acked.output
    again = runner.invoke(cli, ["conflicts", "ack", "cli-ack", "--by", "ann", "--reason", "ok"])
    assert again.exit_code == 1 and "already acknowledged" in again.output
    assert worker.ledger.conflict_count() == 0
