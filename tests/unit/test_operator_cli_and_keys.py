"""Placeholder keys are refused outside the sandbox (one list for every secret), and the operator
CLI names someone even where $USER is unset."""

from __future__ import annotations

import pytest

from config.settings import load_settings
from refunds.cli.actions import os_user
from refunds.errors import ConfigError
from refunds.web.deps import api_key_of, operator_keys_of

PRODUCTION = {
    "profile": "production",
    "mce_base_url": "https://mce.example",
    "mce_client_id": "id",
    "mce_client_secret": "a-real-client-secret-1",
    "mce_webhook_secret": "a-real-webhook-secret-1",
    "redis_url": "redis://redis.example:6379/0",  # production has no implicit Redis
}


@pytest.mark.parametrize("key", ["password", "sandbox-api-key", "changeme", "TODO"])
def test_a_placeholder_intake_key_stops_a_production_app(key: str) -> None:
    settings = load_settings(**PRODUCTION, api_key=key)
    with pytest.raises(ConfigError, match="placeholder"):
        api_key_of(settings)


@pytest.mark.parametrize("key", ["sandbox-operator-key", "password", "secret"])
def test_a_placeholder_operator_key_stops_a_production_app(key: str) -> None:
    settings = load_settings(
        **PRODUCTION, api_key="a-real-intake-key-1", operator_keys=f"bob:{key}"
    )
    with pytest.raises(ConfigError):
        operator_keys_of(settings, "a-real-intake-key-1")


def test_a_real_operator_key_is_named_by_its_configured_name() -> None:
    settings = load_settings(
        **PRODUCTION, api_key="a-real-intake-key-1", operator_keys="ann:a-real-operator-key-1"
    )
    assert operator_keys_of(settings, "a-real-intake-key-1") == {"a-real-operator-key-1": "ann"}


def test_the_operator_cli_names_the_os_user_without_user_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    import os  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    assert os_user() == pwd.getpwuid(os.getuid()).pw_name
