"""The notification settings and delivery policy (issue 11: notifications never vanish).

Pure logic: which queue the task channel may use, how long delivery is retried and how far apart.
The behaviour with a real broker, worker and endpoint is in tests/integration/test_notifications.py.
"""

from __future__ import annotations

import pytest
import redis
from celery import Celery

from config.celery import ALL_QUEUES
from config.errors import ConfigError
from config.settings import DEFAULT_NOTIFY_QUEUE, PIPELINE_QUEUES, load_settings
from refunds.notify import Notifier, retry_delay
from refunds.store.ledger import Ledger


def test_settings_know_exactly_the_queues_our_workers_consume() -> None:
    assert set(ALL_QUEUES.split(",")) == PIPELINE_QUEUES


@pytest.mark.parametrize("value", [None, "", "  "])
def test_the_task_channel_defaults_to_a_dedicated_queue(value: str | None) -> None:
    settings = load_settings(profile="sandbox", notify_task="shop.refund_final", notify_queue=value)
    assert settings.notify_queue == DEFAULT_NOTIFY_QUEUE == "merchant.notifications"
    assert DEFAULT_NOTIFY_QUEUE not in PIPELINE_QUEUES


def test_the_queue_can_be_the_merchants_own() -> None:
    settings = load_settings(profile="sandbox", notify_task="shop.task", notify_queue="shop")
    assert settings.notify_queue == "shop"


@pytest.mark.parametrize("queue", sorted(PIPELINE_QUEUES))
def test_one_of_our_own_queues_is_refused_at_start(queue: str) -> None:
    with pytest.raises(ConfigError, match="own queues") as info:
        load_settings(profile="sandbox", notify_task="shop.refund_final", notify_queue=queue)
    assert "unknown task" in str(info.value)


def test_the_queue_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDS_NOTIFY_QUEUE", "refunds.provider")
    with pytest.raises(ConfigError, match=r"NOTIFY_QUEUE: .refunds\.provider. is one of"):
        load_settings(profile="sandbox")
    monkeypatch.setenv("REFUNDS_NOTIFY_QUEUE", "shop.outcomes")
    monkeypatch.setenv("REFUNDS_NOTIFY_GIVE_UP_AFTER", "7200")
    settings = load_settings(profile="sandbox")
    assert settings.notify_queue == "shop.outcomes" and settings.notify_give_up_after == 7200


def test_delivery_is_retried_for_a_day_by_default() -> None:
    settings = load_settings(profile="sandbox")
    assert settings.notify_give_up_after == 24 * 3600
    assert settings.notify_retry_max_seconds == 600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("notify_give_up_after", 0),
        ("notify_retry_base_seconds", 0),
        ("notify_retry_max_seconds", 3601),
        ("notify_publish_timeout", 0),
    ],
)
def test_nonsense_timings_are_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigError):
        load_settings(profile="sandbox", **{name: value})


@pytest.mark.parametrize("name", ["callback_timeout", "notify_publish_timeout"])
def test_a_delivery_timeout_must_end_before_the_soft_time_limit(name: str) -> None:
    limits = {"task_soft_time_limit": 8, "task_time_limit": 10, "lease_seconds": 12}
    timeouts = {"http_connect_timeout": 1, "http_read_timeout": 2}
    with pytest.raises(ConfigError, match="must be below REFUNDS_TASK_SOFT_TIME_LIMIT"):
        load_settings(profile="sandbox", **limits, **timeouts, **{name: 8})
    assert getattr(load_settings(profile="sandbox", **limits, **timeouts, **{name: 7}), name) == 7


def test_base_above_cap_is_refused() -> None:
    with pytest.raises(ConfigError, match="RETRY_BASE"):
        load_settings(profile="sandbox", notify_retry_base_seconds=5, notify_retry_max_seconds=2)


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    settings = load_settings(
        profile="sandbox", notify_retry_base_seconds=0.5, notify_retry_max_seconds=600
    )
    full = [retry_delay(settings, n, rand=lambda: 1.0) for n in (1, 2, 3, 4, 11, 12, 13, 500)]
    assert full == [0.5, 1.0, 2.0, 4.0, 512.0, 600.0, 600.0, 600.0]
    half = [retry_delay(settings, n, rand=lambda: 0.0) for n in (1, 2, 12)]
    assert half == [0.25, 0.5, 300.0]  # equal jitter: never less than half the step


def test_a_day_of_retries_is_a_few_hundred_attempts_not_a_storm() -> None:
    settings = load_settings(profile="sandbox")
    elapsed, attempts = 0.0, 0
    while elapsed < settings.notify_give_up_after:
        attempts += 1
        elapsed += retry_delay(settings, attempts, rand=lambda: 0.0)
    assert 100 < attempts < 400  # at most one every 5-10 minutes once the cap is reached


def test_a_callback_error_kept_with_the_dead_letter_carries_no_credential_of_the_url() -> None:
    settings = load_settings(
        profile="sandbox",
        callback_url="https://shop:pw-in-url@shop.example/hook?token=tok-in-query",
        callback_secret="a-test-signing-value",
    )
    never_connected = redis.Redis(host="127.0.0.1", port=1)  # register_script does not connect
    notifier = Notifier(settings, Ledger(never_connected), Celery(set_as_current=False))
    why = notifier._scrub(
        "ConnectionError: HTTPSConnectionPool(host='shop.example', port=443): "
        "Max retries exceeded with url: /hook?token=tok-in-query (pw-in-url)"
    )
    assert "tok-in-query" not in why and "pw-in-url" not in why
    assert "url: /hook?***" in why
