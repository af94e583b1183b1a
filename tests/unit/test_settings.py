"""Settings: public variable names, secrets, placeholder refusal, derived values."""

from __future__ import annotations

import os

import pytest

from config.settings import load_settings
from refunds.errors import ConfigError
from refunds.policy import Policy

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


def test_production_reads_the_public_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**PROD, "REDIS_URL": "redis://:pw@redis:6379/2"}.items():
        monkeypatch.setenv(k, v)
    s = load_settings()
    assert s.base_url == "https://mce.example"
    assert s.client_secret.get_secret_value() == "s3cr3t-value-abc"
    assert "s3cr3t" not in repr(s) and "whsec" not in repr(s)
    summary = s.safe_summary()
    assert summary["mce_client_secret"] == "**********"
    assert summary["redis_url"] == "redis://:***@redis:6379/2"


def test_missing_secrets_are_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCE_BASE_URL", "https://mce.example")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "MCE_CLIENT_SECRET is not set" in message and "MCE_WEBHOOK_SECRET" in message
    assert "REFUNDS_PROFILE=sandbox" in message


def test_placeholder_secret_is_refused_and_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**PROD, "MCE_CLIENT_SECRET": "changeme"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "MCE_CLIENT_SECRET is a placeholder" in str(info.value)
    assert "whsec-value-xyz" not in str(info.value)


def test_sandbox_profile_needs_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    s = load_settings()
    assert s.mce_client_id == "sandbox-client-id"
    assert s.base_url.startswith("http://127.0.0.1")


def test_poll_schedule_from_a_comma_list_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    monkeypatch.setenv("REFUNDS_POLL_SCHEDULE", "0.5, 1,2")
    s = load_settings()
    assert s.poll_schedule == [0.5, 1.0, 2.0]
    assert [Policy.from_settings(s).poll_delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    monkeypatch.setenv("REFUNDS_POLL_SCHEDULE", "5,600")  # timers, not countdowns: allowed
    assert load_settings().poll_schedule == [5.0, 600.0]
    monkeypatch.setenv("REFUNDS_POLL_SCHEDULE", "5,7200")
    with pytest.raises(ConfigError, match="<= 3600 seconds"):
        load_settings()


def test_lease_must_outlast_the_task_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    monkeypatch.setenv("REFUNDS_LEASE_SECONDS", "30")
    with pytest.raises(ConfigError, match="LEASE"):
        load_settings()
