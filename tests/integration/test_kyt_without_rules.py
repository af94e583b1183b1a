"""Payment webhooks against real Redis, in process: signed like refund webhooks (a forged one
changes nothing), and without a rules file kept and listed, never acted on, so a rules file can be
backtested on them before it is switched on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import load_settings
from refunds.context import build_context
from refunds.errors import WebhookRejectedError
from refunds.store.kyt import KytStore
from refunds.webhooks import receive
from sandbox.payment_webhooks import payment_body
from sandbox.state import Payment
from sandbox.webhooks import signature_header

RULES = """\
[[rule]]
id = "usdc"
action = "create"
mode = "active"
[rule.when]
currency = ["USDC"]
"""


def test_a_forged_payment_webhook_is_refused_and_nothing_is_kept(redis_db: str) -> None:
    p = build_context(load_settings(profile="sandbox", redis_url=redis_db))
    _, body = payment_body(Payment(1, "TX-F1", "5", "USDC", "TRON", "completed"))
    forged = signature_header("not-the-secret", body)
    with pytest.raises(WebhookRejectedError):
        receive(p, body, forged)
    assert KytStore(p.ledger.redis).since(0) == []


def test_without_rules_a_payment_webhook_is_ignored_and_kept_for_a_backtest(
    redis_db: str, env: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings(profile="sandbox", redis_url=redis_db)
    p = build_context(settings)
    nid, body = payment_body(Payment(1, "TX-W1", "7.25", "USDC", "TRON", "completed"))
    header = signature_header(settings.webhook_secret.get_secret_value(), body)
    assert receive(p, body, header).outcome == "ignored"
    assert p.ledger.find("kyt-1-TX-W1") is None
    store = KytStore(p.ledger.redis)
    assert [n for n, _ in store.since(0)] == [nid]
    assert store.decision(nid) is None
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    done = subprocess.run(  # the backtest writes nothing either
        [sys.executable, "-m", "refunds.cli", "rules", "backtest", "--since", "1h",
         "--file", str(rules), "--json"],
        env={**env, "REDIS_URL": redis_db},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [row] = report["rows"]
    assert row["decision"]["effect"] == "created"
    assert row["decision"]["reference"] == "kyt-1-TX-W1"
    assert row["live"] is None
    assert p.ledger.find("kyt-1-TX-W1") is None
