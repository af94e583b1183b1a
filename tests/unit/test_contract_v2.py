"""Contract v2 on the client side: token answers, version prefix, participantCode and the
webhook secret rule (provider-contract.md sections 2, 3 and 6): pure logic."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from config.settings import load_settings
from refunds.errors import ConfigError
from refunds.mce.schemas import RefundData, TokenData

PROD = {
    "MCE_BASE_URL": "https://mce.example/",
    "MCE_CLIENT_ID": "merchant-1",
    "MCE_CLIENT_SECRET": "s3cr3t-value-abc",
    "MCE_WEBHOOK_SECRET": "whsec-value-xyz",
    "REDIS_URL": "redis://redis.example:6379/0",  # production has no implicit Redis
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("MCE_", "REFUNDS_", "REDIS_URL")):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("answer", "token", "lifetime"),
    [
        ({"access_token": "a", "token_type": "Bearer", "expires_in": 3600}, "a", 3600),
        ({"accessToken": "b", "expiresIn": 8}, "b", 8),  # camelCase at the top level
        ({"code": 200, "msg": "success", "data": {"accessToken": "c", "expiresIn": 60}}, "c", 60),
        ({"code": "200", "msg": "success", "data": {"access_token": "d", "expires_in": 5}}, "d", 5),
        ({"code": 200, "data": {"access_token": "e", "expiresIn": "30"}}, "e", 30),  # mixed
        ({"access_token": "f", "token_type": "Bearer"}, "f", 123),  # no lifetime: the default
        ({"access_token": "g", "expires_in": None}, "g", 123),
        ({"code": 200, "data": {"accessToken": "h", "expiresIn": ""}}, "h", 123),
    ],
)
def test_token_answers_in_every_allowed_shape(answer: Any, token: str, lifetime: float) -> None:
    data = TokenData.from_answer(answer, default_lifetime=123)
    assert (data.access_token, data.expires_in) == (token, lifetime)


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {},
        {"access_token": ""},
        {"access_token": "a", "expires_in": 0},
        {"access_token": "a", "expires_in": -5},
        {"access_token": "a", "expires_in": True},
        {"access_token": "a", "expires_in": "soon"},
        {"code": 401, "data": {"accessToken": "x", "expiresIn": 5}},
        {"code": True, "data": {"accessToken": "x", "expiresIn": 5}},
        {"code": 200, "data": "x"},
        {"code": 200, "msg": "success"},
    ],
)
def test_unusable_token_answers_are_refused(answer: Any) -> None:
    with pytest.raises(ValueError, match=r".+"):
        TokenData.from_answer(answer, default_lifetime=60)


def test_status_info_is_read_and_kept_for_the_ledger() -> None:
    data = RefundData.model_validate(
        {"cryptoRefundId": "CR1", "status": 2, "statusInfo": "PROCESSING"}
    )
    assert data.status_info == "PROCESSING"
    assert data.ledger_fields()["status_info"] == "PROCESSING"
    assert "status_info" not in RefundData.model_validate({"cryptoRefundId": "CR1"}).ledger_fields()


def test_version_is_one_setting_in_front_of_every_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in PROD.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert (s.mce_api_version, s.mce_token_path, s.mce_token_encoding) == (
        "v1.0",
        "/oauth/token",
        "form",
    )
    assert s.api_url("/oauth/token") == "https://mce.example/v1.0/oauth/token"
    monkeypatch.setenv("MCE_API_VERSION", "v2.0")
    assert load_settings().api_url("/x") == "https://mce.example/v2.0/x"
    monkeypatch.setenv("MCE_API_VERSION", "/v2.0/")
    with pytest.raises(ConfigError, match="MCE_API_VERSION"):
        load_settings()


def test_participant_code_is_optional_and_blank_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for k, v in PROD.items():
        monkeypatch.setenv(k, v)
    assert load_settings().mce_participant_code is None
    monkeypatch.setenv("MCE_PARTICIPANT_CODE", "  ")
    assert load_settings().mce_participant_code is None
    monkeypatch.setenv("MCE_PARTICIPANT_CODE", "P-1")
    assert load_settings().mce_participant_code == "P-1"


@pytest.mark.parametrize("profile", ["production", "sandbox"])
@pytest.mark.parametrize("secret", ["", "   ", "\t"])
def test_empty_or_blank_webhook_secret_refuses_to_start_in_every_profile(
    monkeypatch: pytest.MonkeyPatch, profile: str, secret: str
) -> None:
    for k, v in PROD.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REFUNDS_PROFILE", profile)
    monkeypatch.setenv("MCE_WEBHOOK_SECRET", secret)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert "MCE_WEBHOOK_SECRET" in message
    assert "empty or blank" in message


def test_a_process_with_a_blank_webhook_secret_exits_with_one_line() -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MCE_", "REFUNDS_", "REDIS_URL"))
    }
    env |= {"REFUNDS_PROFILE": "sandbox", "MCE_WEBHOOK_SECRET": " "}
    code = "from config.settings import get_settings; get_settings()"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "MCE_WEBHOOK_SECRET" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "empty or blank" in last
