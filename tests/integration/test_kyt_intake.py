"""KYT intake by rules, end to end: the sandbox flags payments and sends their payment webhooks,
signed, to the real web app; a real worker and beat move the intents the rules made.

One stack, one rules file with a shadow rule (USDT) and an active create rule (USDC), and a deny
list (``severe``). What is proven: shadow records and creates nothing; active makes exactly one
intent per payment (one webhook delivered three times, and a second notificationId for the same
payment), held for a person at Confirm; denied and unknown KYT results make nothing and raise
the alert (counter and ERROR line); a Create answered CRYPTO_REFUND_NOT_PENDING ends in
``not_refundable`` and is never retried; the backtest of the stored webhooks gives the live
decisions; ``refunds rules check`` lists every problem of a bad file, and the web app refuses one.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.localstack import (
    Child,
    free_port,
    start_beat,
    start_sandbox,
    start_web,
    start_worker,
    wait_for_worker,
    wait_until,
)
from refunds.models import State
from refunds.store.kyt import KytStore
from refunds.store.ledger import Ledger
from tests.conftest import RedisDatabases, SandboxAdmin

KEY = "test-api-key-kyt"
SECRET = "whsec-test-kyt-5b1e"
OPERATOR_KEY = "sandbox-operator-key"  # the sandbox profile's published operator key
RULES = """\
version = 1
[deny]
kyt_results = ["severe"]

[[rule]]
id = "shadow-usdt"
action = "create"
mode = "shadow"
[rule.when]
currency = ["USDT"]

[[rule]]
id = "active-usdc"
action = "create"
mode = "active"
[rule.when]
currency = ["USDC"]
"""


class Stack:
    def __init__(
        self, url: str, redis_url: str, sandbox: SandboxAdmin, web: Child, env: dict[str, str]
    ) -> None:
        self.url = url
        self.ledger = Ledger.from_url(redis_url)
        self.kyt = KytStore(self.ledger.redis)
        self.sandbox = sandbox
        self.web = web
        self.env = env

    def metric(self, name: str, **labels: str) -> float:
        text = requests.get(self.url + "/metrics", timeout=10).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = re.escape(name + (f"{{{want}}}" if labels else "")) + r" (\S+)"
        found = re.search(r"^" + pattern + "$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def decisions(self, nids: list[str], timeout: float = 30) -> list[dict[str, Any]]:
        """The decisions kept on the stored events, once every one has one."""
        wait_until(
            lambda: all(self.kyt.decision(n) for n in nids), timeout, "KYT decisions", self.web
        )
        return [self.kyt.decision(n) or {} for n in nids]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refunds.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kyt") / "rules.toml"
    path.write_text(RULES)
    return path


@pytest.fixture(scope="module")
def stack(
    redis_dbs: RedisDatabases,
    tmp_path_factory: pytest.TempPathFactory,
    env: dict[str, str],
    rules_file: Path,
) -> Iterator[Stack]:
    """A database of the private Redis, its own sandbox (webhooks to our web), web, worker,
    beat, and the rules file."""
    logdir = tmp_path_factory.mktemp("kyt-logs")
    url = redis_dbs.take()
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/webhooks/mce"
    sandbox_child, sandbox_url = start_sandbox(
        logdir, extra_args=["--webhook-url", hook_url, "--webhook-secret", SECRET]
    )
    wenv = {
        **env,
        "REDIS_URL": url,
        "MCE_BASE_URL": sandbox_url,
        "MCE_WEBHOOK_SECRET": SECRET,
        "REFUNDS_API_KEY": KEY,
        "REFUNDS_KYT_RULES_FILE": str(rules_file),
    }
    children: list[Child] = [sandbox_child]
    try:
        web = start_web(logdir, wenv, port=port, name="kyt-web")
        children.append(web)
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 30, "web", web
        )
        worker = start_worker(logdir, wenv, name="kyt-worker", concurrency=2)
        children.append(worker)
        wait_for_worker(worker)
        children.append(start_beat(logdir, wenv, name="kyt-beat"))
        admin = SandboxAdmin(sandbox_url)
        admin.reset(processing_seconds=0.3, webhook_url=hook_url, webhook_secret=SECRET)
        yield Stack(f"http://127.0.0.1:{port}", url, admin, web, wenv)
    finally:
        for child in reversed(children):
            child.stop()
        redis_dbs.give_back(url)


def payment(txn: str, currency: str, **webhook: Any) -> dict[str, Any]:
    return {
        "originalTransactionType": 1,
        "originalTransactionId": txn,
        "amount": "125.50",
        "currency": currency,
        "blockchain": "TRON",
        "webhook": webhook,
    }


def test_shadow_mode_records_decisions_and_creates_nothing(stack: Stack, prefix: str) -> None:
    before = stack.metric(
        "refunds_kyt_rule_matches_total", rule="shadow-usdt", action="create", mode="shadow"
    )
    txns = [f"{prefix}s{i}" for i in range(3)]
    nids = stack.sandbox.flag_and_notify([payment(t, "USDT", kytResult=3) for t in txns])
    assert len(nids) == 3
    for txn, decision in zip(txns, stack.decisions(nids), strict=True):
        assert decision["effect"] == "shadow"
        assert (decision["rule"], decision["action"], decision["mode"]) == (
            "shadow-usdt",
            "create",
            "shadow",
        )
        assert decision["reference"] == f"kyt-1-{txn}"
        assert decision["intent"] is None
    time.sleep(1.5)  # a tick or more: nothing may appear later either
    for txn in txns:
        assert stack.ledger.find(f"kyt-1-{txn}") is None
        assert stack.sandbox.effects(f"kyt-1-{txn}") == {}
    after = stack.metric(
        "refunds_kyt_rule_matches_total", rule="shadow-usdt", action="create", mode="shadow"
    )
    assert after - before == 3


def test_active_mode_creates_one_intent_per_payment_held_for_a_person_at_confirm(
    stack: Stack, prefix: str, rules_file: Path
) -> None:
    one, two = f"{prefix}a1", f"{prefix}a2"
    first = stack.sandbox.flag_and_notify(
        [payment(one, "USDC", kytResult=3, copies=3), payment(two, "USDC", kytResult=4)]
    )
    stack.decisions(first)
    # Another notificationId for the same payment (MCE's own retry, or a status update).
    again = stack.sandbox.payment_webhooks([payment(one, "USDC", kytResult=3)])
    stack.decisions(again)
    refs = [f"kyt-1-{one}", f"kyt-1-{two}"]

    def held() -> bool:
        records = [stack.ledger.find(r) for r in refs]
        return all(r is not None and r.state == State.AWAITING_APPROVAL for r in records)

    wait_until(held, 60, "rule-made intents held at Confirm", stack.web)
    digest = hashlib.sha256(rules_file.read_bytes()).hexdigest()
    record = stack.ledger.get(refs[0])
    assert record.kyt_rule == "active-usdc"
    assert record.kyt_action == "create"
    assert record.kyt_rules_hash == digest
    assert sorted(record.notification_ids or []) == sorted([first[0], again[0]])
    assert record.kyt_payment is not None
    assert record.kyt_payment["amount"] == "125.50"
    assert record.kyt_payment["currency"] == "USDC"
    assert record.kyt_payment["kytResult"] == "3"
    assert record.kyt_payment["participantCode"] == "P000123"
    assert any("Confirm waits for a person" in h.reason for h in record.history)
    assert stack.ledger.get(refs[1]).notification_ids == [first[1]]
    time.sleep(1.5)  # held means held: no Confirm later either
    for ref in refs:
        effects = stack.sandbox.effects(ref)
        assert (effects.get("create"), effects.get("confirm", 0)) == (1, 0)
        assert stack.ledger.get(ref).state == State.AWAITING_APPROVAL
    deliveries = [d for d in stack.sandbox.webhook_deliveries() if d["notificationId"] == first[0]]
    assert len(deliveries) == 3  # the same webhook delivered three times, one intent
    # The approval shows the payment: the public record an approver reads carries it.
    shown = requests.get(
        f"{stack.url}/refunds/{refs[0]}", headers={"X-API-Key": KEY}, timeout=10
    ).json()
    assert shown["kytPayment"]["originalTransactionId"] == one
    assert shown["kytRule"] == "active-usdc"
    console = requests.Session()
    login = console.post(
        stack.url + "/console/login", data={"key": OPERATOR_KEY, "next": "/console"}, timeout=10
    )
    assert login.status_code == 200, login.text
    page = console.get(stack.url + "/console/approvals", timeout=10).text
    assert f"made by KYT rule active-usdc (create): deposit {one}, 125.50 USDC on TRON" in page
    # A person approves: only then is Confirm sent, and the refund completes.
    approved = requests.post(
        f"{stack.url}/refunds/{refs[1]}/approve",
        json={"reason": "KYT high risk, payer asked for it back"},
        headers={"X-API-Key": OPERATOR_KEY},
        timeout=10,
    )
    assert approved.status_code == 200, approved.text
    wait_until(
        lambda: stack.ledger.get(refs[1]).state == State.COMPLETED, 60, "completed", stack.web
    )
    assert stack.sandbox.effects(refs[1]).get("confirm") == 1


def test_denied_and_unknown_kyt_results_create_nothing_and_raise_the_alert(
    stack: Stack, prefix: str
) -> None:
    unmapped0 = stack.metric("refunds_kyt_unmapped_total")
    denied0 = stack.metric("refunds_kyt_denied_total")
    txns = [f"{prefix}d-severe", f"{prefix}d-unknown", f"{prefix}d-missing"]
    nids = stack.sandbox.flag_and_notify(
        [
            payment(txns[0], "USDC", kytResult=5),
            payment(txns[1], "USDC", kytResult=42),
            payment(txns[2], "USDC", shape="no-kyt"),
        ]
    )
    decisions = stack.decisions(nids)
    assert [d["effect"] for d in decisions] == ["denied"] * 3
    assert "deny list" in decisions[0]["why"]
    assert "42 is not mapped" in decisions[1]["why"]
    assert stack.metric("refunds_kyt_unmapped_total") - unmapped0 == 2
    assert stack.metric("refunds_kyt_denied_total") - denied0 == 3
    log = stack.web.log_path.read_text(errors="replace")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [e for e in lines if str(e.get("msg", "")).startswith("KYT: payment denied")]
    for nid in nids:
        assert any(e["level"] == "error" and e.get("notification_id") == nid for e in errors), nid
    time.sleep(1.0)
    for txn in txns:
        assert stack.ledger.find(f"kyt-1-{txn}") is None
        assert stack.sandbox.effects(f"kyt-1-{txn}") == {}


def test_a_create_answered_not_pending_ends_not_refundable_and_is_never_retried(
    stack: Stack, prefix: str
) -> None:
    txn = f"{prefix}np"
    ref = f"kyt-1-{txn}"
    creates = stack.sandbox.calls().get("create", 0)
    # A webhook for a payment MCE no longer holds pending: Create answers "no pending refund".
    stack.decisions(stack.sandbox.payment_webhooks([payment(txn, "USDC", kytResult=3)]))

    def final() -> bool:
        record = stack.ledger.find(ref)
        return record is not None and record.state == State.NOT_REFUNDABLE

    wait_until(final, 60, "not_refundable", stack.web)
    record = stack.ledger.get(ref)
    assert record.is_final
    assert (record.last_error or {}).get("code") == "CRYPTO_REFUND_NOT_PENDING"
    assert stack.ledger.due_at(ref) is None  # no timer: nothing will come back for it
    time.sleep(2.0)  # several ticks: never retried
    assert stack.sandbox.calls().get("create", 0) - creates == 1
    assert stack.ledger.get(ref).state == State.NOT_REFUNDABLE


def test_the_backtest_of_the_stored_webhooks_gives_the_live_decisions(stack: Stack) -> None:
    done = cli(stack.env, "rules", "backtest", "--since", "1h", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["rows"]
    assert len(rows) >= 10  # every webhook the tests above sent
    assert report["differ"] == 0
    for row in rows:
        assert row["live"] is not None
        assert row["same"], row
        live = {k: row["live"][k] for k in ("effect", "rule", "action", "mode", "reference")}
        assert live == {k: row["decision"][k] for k in live}
    effects = {row["decision"]["effect"] for row in rows}
    assert {"shadow", "created", "denied"} <= effects
    text = cli(stack.env, "rules", "backtest", "--since", "1h")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert len(lines) == len(rows) + 1
    assert lines[-1].startswith(f"total {len(rows)}: ")
    assert lines[-1].endswith("differ from live: 0")


BAD_RULES = """\
[[rule]]
id = "no-action"
[[rule]]
id = "bad-mode"
action = "create"
mode = "sometimes"
[rule.when]
amount_max = 5.5
[[rule]]
id = "no-action"
action = "record"
"""


def test_rules_check_lists_every_problem_and_the_web_app_refuses_a_bad_file(
    env: dict[str, str], tmp_path: Path, rules_file: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_RULES)
    # Checking a file needs no Redis, provider or secrets: a bare environment will do.
    bare = {"PATH": env.get("PATH", ""), "REFUNDS_KYT_RESULTS": "1=low,3=high,5=severe"}
    checked = cli(bare, "rules", "check", str(bad))
    assert checked.returncode == 2
    problems = [line for line in checked.stderr.splitlines() if line.startswith("  - ")]
    assert problems == [
        "  - rule no-action: action None is not one of ignore, record, propose, create",
        "  - rule bad-mode: mode 'sometimes' is not one of off, shadow, active",
        "  - rule bad-mode: when.amount_max: write the amount as a string (5.5 is a float)",
        "  - rule no-action: id used twice",
    ]
    good = cli(bare, "rules", "check", str(rules_file))
    assert good.returncode == 0, good.stderr
    assert "2 rules (shadow-usdt, active-usdc)" in good.stdout
    web = subprocess.run(
        [sys.executable, "-m", "refunds.cli", "web", "--port", str(free_port())],
        env={**env, "REFUNDS_API_KEY": KEY, "REFUNDS_KYT_RULES_FILE": str(bad)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert web.returncode == 2
    assert "REFUNDS_KYT_RULES_FILE" in web.stderr
    assert "rule bad-mode: mode 'sometimes'" in web.stderr
    assert "rule no-action: id used twice" in web.stderr
