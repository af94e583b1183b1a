"""Settings read exactly their documented environment names: case-sensitively, no unprefixed
fallback, no alias of another service's variable; every field documents itself."""

from __future__ import annotations

import os

import pytest

from config.settings import Settings, env_names, groups, load_settings
from refunds.errors import ConfigError
from refunds.web.deps import api_key_of, operator_keys_of

PROD = {
    "MCE_BASE_URL": "https://mce.example",
    "MCE_CLIENT_ID": "merchant-1",
    "MCE_CLIENT_SECRET": "s3cr3t-value-abc",
    "MCE_WEBHOOK_SECRET": "whsec-value-xyz",
    "REDIS_URL": "redis://redis.example:6379/0",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith(("MCE_", "REFUNDS_", "REDIS_")):
            monkeypatch.delenv(key)


def _production(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in PROD.items():
        monkeypatch.setenv(key, value)


def test_a_bare_api_key_is_not_the_intake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _production(monkeypatch)
    monkeypatch.setenv("API_KEY", "another-services-key-123")
    monkeypatch.setenv("api_key", "another-services-key-456")
    settings = load_settings()
    assert settings.api_key is None
    with pytest.raises(ConfigError, match="REFUNDS_API_KEY is not set"):
        api_key_of(settings)


@pytest.mark.parametrize("name", ["PROFILE", "profile", "refunds_profile", "Refunds_Profile"])
def test_only_refunds_profile_changes_the_profile(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _production(monkeypatch)
    monkeypatch.setenv(name, "sandbox")
    assert load_settings().profile == "production"
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    assert load_settings().profile == "sandbox"


def test_bare_operator_key_and_body_limit_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    _production(monkeypatch)
    monkeypatch.setenv("REFUNDS_API_KEY", "a-real-intake-key-1")
    for name, value in {
        "OPERATOR_API_KEY": "bare-operator-key-1",
        "operator_api_key": "lower-operator-key-1",
        "refunds_operator_api_key": "lower-operator-key-2",
        "OPERATOR_KEYS": "eve:bare-operator-key-2",
        "MAX_BODY_BYTES": "2048",
        "max_body_bytes": "4096",
        "refunds_max_body_bytes": "8192",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.operator_api_key is None and settings.operator_keys is None
    assert operator_keys_of(settings, "a-real-intake-key-1") == {}
    assert settings.max_body_bytes == 64 * 1024


def test_every_bare_and_lower_case_name_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _production(monkeypatch)
    baseline = load_settings().model_dump()
    for names in env_names().values():
        for name in names:
            variants = {name.lower(), name.removeprefix("REFUNDS_"), name.title()}
            variants |= {v.lower() for v in variants}
            for variant in variants - {name}:
                monkeypatch.setenv(variant, "sandbox" if "PROFILE" in name else "7")
    assert load_settings().model_dump() == baseline


def test_every_field_has_one_upper_case_documented_name_and_a_description() -> None:
    names = env_names()
    assert set(names) == set(Settings.model_fields)
    for field, info in Settings.model_fields.items():
        assert info.description, field
        for name in names[field]:
            assert name == name.upper() and name.startswith(("REFUNDS_", "MCE_", "REDIS_")), name
    flat = [n for ns in names.values() for n in ns]
    assert len(flat) == len(set(flat))


def test_python_callers_still_pass_field_names() -> None:
    settings = load_settings(profile="sandbox", tick_interval=0.5, redis_url="redis://h:1/2")
    assert (settings.profile, settings.tick_interval, settings.redis_url) == (
        "sandbox",
        0.5,
        "redis://h:1/2",
    )


def test_an_unknown_override_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match="tick_intervall"):
        load_settings(profile="sandbox", tick_intervall=0.5)


def test_every_setting_belongs_to_exactly_one_group() -> None:
    grouped = [field for fields in groups().values() for field in fields]
    assert sorted(grouped) == sorted(Settings.model_fields)
    assert groups()["process"] == ["profile", "log_level", "log_json"]
    assert "redis_url" in groups()["redis"] and "approval_thresholds" in groups()["approvals"]
