"""The registry file: what a good one gives, and a bad one refused with every problem named."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from config.settings import load_settings
from refunds.decisions import decide, hold_before_confirm
from refunds.errors import ConfigError
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord, State
from refunds.participants.registry import (
    intake_problem,
    parse_registry,
    registry_of,
    single_registry,
)
from refunds.policy import Policy

GOOD = """
default_participant = "SHOP-1"

[[credentials]]
id = "eu"
base_url = "https://api.mce.example/"
client_id = "eu-client"
client_secret = "env:TEST_EU_SECRET"
webhook_secrets = ["env:TEST_EU_HOOK", "file:{hook_file}"]
max_rps = 20

[[participants]]
participant_code = "SHOP-1"
credential = "eu"
approval_thresholds = "USDT=1000,btc=0.5"
rules = ["refund-small", "deny-sanctioned"]
notify_url = "https://shop-1.example/refunds"

[[participants]]
participant_code = "SHOP-2"
credential = "eu"
enabled = false
"""


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TEST_EU_SECRET", "eu-secret-value")
    monkeypatch.setenv("TEST_EU_HOOK", "eu-hook-value")
    hook = tmp_path / "hook-next"
    hook.write_text("eu-hook-next\n")
    return hook


def test_a_good_registry_resolves_secret_references_and_keeps_them_out_of_reprs(
    secrets: Path,
) -> None:
    registry = parse_registry(GOOD.format(hook_file=secrets))
    cred = registry.credentials["eu"]
    assert cred.base_url == "https://api.mce.example"
    assert cred.client_secret is not None
    assert cred.client_secret.get_secret_value() == "eu-secret-value"
    assert [s.get_secret_value() for s in cred.webhook_secrets] == [
        "eu-hook-value",
        "eu-hook-next",
    ]
    assert cred.max_rps == 20
    assert "eu-secret-value" not in repr(registry)
    assert "eu-hook" not in repr(registry)
    shop = registry.participants["SHOP-1"]
    assert shop.approval_thresholds == {"USDT": Decimal(1000), "BTC": Decimal("0.5")}
    assert shop.rules == ("refund-small", "deny-sanctioned")
    assert registry.default == "SHOP-1"
    assert registry.codes_of("eu") == {"SHOP-1", "SHOP-2"}
    assert registry.codes == ("SHOP-1", "SHOP-2")


def test_a_bad_registry_names_every_problem_in_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TEST_MISSING_SECRET", raising=False)
    text = """
default_participant = "NOBODY"
colour = "blue"

[[credentials]]
id = "eu"
base_url = "ftp://api.mce.example"
client_id = "eu-client"
client_secret = "the-secret-itself"
webhook_secrets = ["env:TEST_MISSING_SECRET", "env:A", "env:B"]
max_rps = 0

[[credentials]]
id = "us"
base_url = "https://us.mce.example"
client_id = "us-client"
client_secret = "env:TEST_MISSING_SECRET"
webhook_secrets = ["file:/nonexistent/hook"]

[[participants]]
participant_code = "SHOP 1"
credential = "eu"

[[participants]]
participant_code = "SHOP-2"
credential = "asia"
"""
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, "reg.toml")
    message = str(caught.value)
    for expected in (
        "colour: unknown field",
        "credentials[0].base_url: must be an http(s):// URL",
        "credentials[0].webhook_secrets: List should have at most 2 items",
        "credentials[0].max_rps: Input should be greater than 0",
        "credentials (us).client_secret: environment variable TEST_MISSING_SECRET is not set",
        "credentials (us).webhook_secrets[0]: cannot read /nonexistent/hook",
        "participants[0].participant_code: String should match pattern",
        "participants (SHOP-2).credential: no credential 'asia' (us)",
        "default_participant: no participant 'NOBODY'",
    ):
        assert expected in message, (expected, message)
    assert message.startswith("invalid registry reg.toml: ")
    assert "\n" not in message


def test_a_secret_written_into_the_file_is_refused_without_being_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_EU_HOOK", "h")
    text = """
[[credentials]]
id = "eu"
base_url = "https://api.mce.example"
client_id = "eu-client"
client_secret = "s3cr3t-value"
webhook_secrets = ["env:TEST_EU_HOOK"]

[[participants]]
participant_code = "SHOP-1"
credential = "eu"
"""
    with pytest.raises(ConfigError) as caught:
        parse_registry(text)
    assert "client_secret: must be a reference, env:NAME or file:/path" in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)


def test_intake_takes_a_registry_participant_and_refuses_others(secrets: Path) -> None:
    registry = parse_registry(GOOD.format(hook_file=secrets))
    assert intake_problem(registry, "SHOP-1") is None
    assert intake_problem(registry, None) is None  # the default participant
    assert intake_problem(registry, "SHOP-9") == "SHOP-9 is not a participant in the registry"
    assert intake_problem(registry, "SHOP-2") == "participant SHOP-2 is disabled in the registry"
    no_default = parse_registry(GOOD.format(hook_file=secrets).replace("default_participant", "#"))
    assert "is required" in str(intake_problem(no_default, None))


def test_without_a_registry_file_one_credential_keeps_todays_settings() -> None:
    settings = load_settings(profile="sandbox", mce_max_rps=7)
    single = registry_of(settings)
    assert not single.from_file
    assert list(single.credentials) == [None]  # the single-credential keys
    assert single.credentials[None].max_rps == 7
    assert intake_problem(single, None) is None
    assert "without a registry" in str(intake_problem(single, "SHOP-1"))
    coded = single_registry(load_settings(profile="sandbox", mce_participant_code="P-1"))
    assert intake_problem(coded, "P-1") is None
    assert intake_problem(coded, "P-2") == "must be P-1 (MCE_PARTICIPANT_CODE)"


def test_a_participants_own_thresholds_replace_the_global_ones() -> None:
    policy = Policy(
        approval_thresholds={"USDT": Decimal(100)},
        participant_thresholds={"BIG": {"USDT": Decimal(10000)}},
    )
    assert policy.needs_approval(Decimal(500), "USDT")
    assert policy.needs_approval(Decimal(500), "USDT", "SMALL")
    assert not policy.needs_approval(Decimal(500), "USDT", "BIG")
    assert policy.needs_approval(Decimal(500), "BTC", "BIG")  # no limit set: held


def test_a_bad_registry_file_stops_the_cli_and_the_worker_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "registry.toml"
    bad.write_text('[[credentials]]\nid = "x y"\n\n[[participants]]\ncredential = "x"\n')
    env = {
        **os.environ,
        "REFUNDS_PROFILE": "sandbox",
        "REFUNDS_REGISTRY_FILE": str(bad),
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    cli = subprocess.run(
        [sys.executable, "-m", "refunds.cli", "participant", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 2, cli.stderr
    line = cli.stderr.strip()
    assert line.startswith(f"refunds: invalid registry {bad}: ")
    assert "credentials[0].id: String should match pattern" in line
    assert "credentials[0].base_url: Field required" in line
    assert "participants[0].participant_code: Field required" in line
    worker = subprocess.run(
        [sys.executable, "-c", "import worker.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 2, worker.stderr
    assert "invalid registry" in worker.stderr


def _refund(state: State, participant: str | None, **more: Any) -> RefundRecord:
    base: dict[str, Any] = {
        "client_reference": "ref-1",
        "state": state,
        "original_transaction_type": 1,
        "original_transaction_id": "tx-1",
        "refund_address": None,
        "fingerprint": "fp",
        "created_at": 1_800_000_000.0,
        "updated_at": 1_800_000_000.0,
        "version": 3,
        "participant": participant,
        "crypto_refund_id": "CR1",
    }
    return RefundRecord(**{**base, **more})


def test_the_hold_before_confirm_uses_the_refunds_participants_thresholds() -> None:
    policy = Policy(
        approval_thresholds={"USDT": Decimal(100)},
        participant_thresholds={"BIG": {"USDT": Decimal(10000)}},
    )
    amount = {"amount": Decimal(500), "currency": "USDT"}
    assert hold_before_confirm(_refund(State.CREATED, "BIG", **amount), policy) is None
    held = hold_before_confirm(_refund(State.CREATED, "SMALL", **amount), policy)
    assert held is not None and held.target == State.AWAITING_APPROVAL
    assert hold_before_confirm(_refund(State.CREATED, None, **amount), policy) is not None
    news = RefundData.model_validate(
        {"cryptoRefundId": "CR1", "clientReference": "ref-1", "status": 1, **amount}
    )
    by_news = decide(
        _refund(State.CREATING, "BIG"), news, policy, source="create", now=1_800_000_001.0
    )
    assert by_news.target != State.AWAITING_APPROVAL
    small = decide(
        _refund(State.CREATING, "SMALL"), news, policy, source="create", now=1_800_000_001.0
    )
    assert small.target == State.AWAITING_APPROVAL
