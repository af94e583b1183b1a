"""Start-up rules: every broken rule in one message, malformed URLs, a currency named twice, the
production profile's rules, and no implicit Redis outside the sandbox."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from config.settings import implicit_redis_notice, load_settings
from refunds.errors import ConfigError
from refunds.policy import Policy

PROD: dict[str, Any] = {
    "profile": "production",
    "mce_base_url": "https://mce.example",
    "mce_client_id": "merchant-1",
    "mce_client_secret": "s3cr3t-value-abc",
    "mce_webhook_secret": "whsec-value-xyz",
    "redis_url": "redis://redis.example:6379/0",
}


def _message(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_every_broken_timing_rule_is_named_in_one_message() -> None:
    message = _message(
        profile="sandbox",
        http_read_timeout=50,  # 2 x (3.05 + 50) over the soft limit
        task_soft_time_limit=70,  # not below the hard limit
        task_time_limit=60,
        lease_seconds=40,  # not above the hard limit
        step_lease_seconds=45,  # not below the lease
        callback_url="https://shop.example/x",  # no secret to sign with
    )
    for fragment in (
        "must fit under REFUNDS_TASK_SOFT_TIME_LIMIT",
        "REFUNDS_TASK_SOFT_TIME_LIMIT must be below REFUNDS_TASK_TIME_LIMIT",
        "REFUNDS_LEASE_SECONDS must exceed REFUNDS_TASK_TIME_LIMIT",
        "REFUNDS_STEP_LEASE_SECONDS must be below REFUNDS_LEASE_SECONDS",
        "REFUNDS_CALLBACK_URL needs REFUNDS_CALLBACK_SECRET",
    ):
        assert fragment in message, fragment


def test_malformed_fields_and_broken_rules_are_reported_together() -> None:
    message = _message(
        profile="sandbox",
        redis_url="http://127.0.0.1:6379/0",
        tick_interval="soon",
        http_read_timeout=50,
        lease_seconds=30,
    )
    assert "REDIS_URL: uses http://" in message
    assert "REFUNDS_TICK_INTERVAL:" in message
    assert "must fit under REFUNDS_TASK_SOFT_TIME_LIMIT" in message
    assert "REFUNDS_LEASE_SECONDS must exceed" in message


def test_a_rule_reading_a_malformed_field_is_not_judged_on_its_default() -> None:
    # The soft limit is malformed: the rules that compare it say nothing about a value nobody set.
    message = _message(profile="sandbox", task_soft_time_limit="x", http_read_timeout=50)
    assert "REFUNDS_TASK_SOFT_TIME_LIMIT:" in message
    assert "must fit under" not in message


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("127.0.0.1:6379", "has no scheme"),
        ("localhost:6379/0", "has no scheme"),
        ("http://127.0.0.1:6379/0", "uses http://"),
        ("unix:///tmp/redis.sock", "uses unix://"),
        ("redis://", "names no host"),
        ("redis://:pw@/0", "names no host"),
        ("redis://h:notaport/0", "malformed host or port"),
        ("redis://h:70000/0", "malformed host or port"),
        ("redis://h:6379/zero", "not a number"),
    ],
)
def test_a_malformed_redis_url_is_one_clear_error(url: str, fragment: str) -> None:
    message = _message(profile="sandbox", redis_url=url)
    assert message.startswith("invalid configuration: REDIS_URL: "), message
    assert fragment in message


def test_a_malformed_redis_url_never_shows_its_password() -> None:
    for url in (
        "http://:hunter2-pw@h/0",
        "redis://:hunter2-pw@h:port/0",
        "redis://:hunter2-pw@h/x",
    ):
        assert "hunter2" not in _message(profile="sandbox", redis_url=url)


@pytest.mark.parametrize(
    "url", ["redis://h", "redis://h:6380/3", "rediss://u:p%40w@h:6380/15", "redis://[::1]:6379/0"]
)
def test_well_formed_redis_urls_are_taken(url: str) -> None:
    assert load_settings(profile="sandbox", redis_url=url).redis_url == url


@pytest.mark.parametrize(
    ("value", "spellings"),
    [
        ("USDT=1000,usdt=1000000", ("'USDT'", "'usdt'")),
        ("USDT=1000, USDT=1000000", ("'USDT'", "'USDT'")),
        ('{"USDT": "1000", "Usdt": "1000000"}', ("'USDT'", "'Usdt'")),
        ('{"BTC": "1", "BTC": "2"}', ("'BTC'", "'BTC'")),
        ({"eth": "1", "ETH": "2"}, ("'eth'", "'ETH'")),
    ],
)
def test_a_currency_named_twice_is_refused_naming_both_spellings(
    value: object, spellings: tuple[str, str]
) -> None:
    message = _message(profile="sandbox", approval_thresholds=value)
    assert message.startswith("invalid configuration: REFUNDS_APPROVAL_THRESHOLDS: names ")
    first, second = spellings
    assert first in message and second in message
    assert message.count(first) + (first != second) * message.count(second) >= 2


def test_thresholds_in_any_case_guard_the_currency() -> None:
    settings = load_settings(profile="sandbox", approval_thresholds="usdt=1000, btc=0.05")
    assert settings.approval_thresholds == {"USDT": Decimal(1000), "BTC": Decimal("0.05")}
    assert Policy.from_settings(settings).approval_thresholds["USDT"] == Decimal(1000)


@pytest.mark.parametrize(
    "url", ["http://mce.example", "http://10.0.0.8:8099", "http://mce.example.127.0.0.1.nip.io"]
)
def test_production_refuses_a_plain_http_provider(url: str) -> None:
    message = _message(**{**PROD, "mce_base_url": url})
    assert "MCE_BASE_URL must be https:// in production" in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8099", "http://localhost:8099", "http://[::1]:1"]
)
def test_production_allows_http_only_to_this_machine(url: str) -> None:
    assert load_settings(**{**PROD, "mce_base_url": url}).base_url == url


@pytest.mark.parametrize("url", ["mce.example", "ftp://mce.example", "https://", "https://:1"])
def test_a_malformed_provider_url_is_refused_in_every_profile(url: str) -> None:
    for profile in ("sandbox", "production"):
        message = _message(**{**PROD, "profile": profile, "mce_base_url": url})
        assert "MCE_BASE_URL: " in message


def test_the_sandbox_may_use_a_plain_http_provider() -> None:
    assert load_settings(profile="sandbox", mce_base_url="http://sim.example:8099").base_url


def test_production_bounds_the_webhook_tolerance() -> None:
    assert load_settings(**PROD, webhook_tolerance_seconds=600).webhook_tolerance_seconds == 600
    message = _message(**PROD, webhook_tolerance_seconds=601)
    assert "REFUNDS_WEBHOOK_TOLERANCE_SECONDS must be at most 600 in production" in message


@pytest.mark.parametrize(
    ("lock", "wait", "fragments"),
    [
        (10, 15, ["REFUNDS_TOKEN_LOCK_SECONDS (10 s) must exceed one token fetch"]),
        (13.05, 15, ["REFUNDS_TOKEN_LOCK_SECONDS (13.05 s) must exceed"]),
        (15, 10, ["REFUNDS_TOKEN_WAIT_SECONDS (10 s) must be at least one token fetch"]),
        (5, 5, ["REFUNDS_TOKEN_LOCK_SECONDS", "REFUNDS_TOKEN_WAIT_SECONDS"]),
    ],
)
def test_production_token_lock_and_wait_cover_a_token_fetch(
    lock: float, wait: float, fragments: list[str]
) -> None:
    # A fetch may take connect + read = 3.05 + 10 s by default.
    message = _message(**PROD, token_lock_seconds=lock, token_wait_seconds=wait)
    for fragment in fragments:
        assert fragment in message
    assert "(13.05 s)" in message


def test_the_defaults_pass_every_production_rule() -> None:
    settings = load_settings(**PROD)
    fetch = settings.http_connect_timeout + settings.http_read_timeout
    assert settings.token_lock_seconds > fetch and settings.token_wait_seconds >= fetch


def test_production_needs_a_redis_url_or_sentinels() -> None:
    message = _message(**{**PROD, "redis_url": ""})
    assert "REDIS_URL is not set" in message
    settings = load_settings(
        **{**PROD, "redis_url": ""}, redis_sentinels="s1:26379", redis_sentinel_master="m"
    )
    assert settings.uses_sentinel and not settings.implicit_redis


def test_the_sandbox_falls_back_to_a_local_redis_and_says_so() -> None:
    settings = load_settings(profile="sandbox")
    assert settings.redis_url == "redis://127.0.0.1:6379/0" and settings.implicit_redis
    assert implicit_redis_notice(settings) == (
        "notice: REDIS_URL is not set; the sandbox profile uses redis://127.0.0.1:6379/0"
    )
    configured = load_settings(profile="sandbox", redis_url="redis://h:1/0")
    assert not configured.implicit_redis and implicit_redis_notice(configured) is None
