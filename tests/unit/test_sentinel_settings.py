"""Parsing and validation of the Redis Sentinel settings, and the clients and URLs from them."""

from __future__ import annotations

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

from config.celery import celery_config
from config.redis_connection import (
    SentinelCredentials,
    broker_transport_options,
    broker_url,
    redis_client,
)
from config.settings import load_settings
from refunds.errors import ConfigError

BASE = {"profile": "sandbox"}


def test_plain_redis_url_is_unchanged() -> None:
    settings = load_settings(**BASE, redis_url="redis://:pw@10.0.0.5:6380/3")
    assert not settings.uses_sentinel
    assert broker_url(settings) == "redis://:pw@10.0.0.5:6380/3"
    assert broker_transport_options(settings) == {
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
    }
    client = redis_client(settings)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "10.0.0.5",
        6380,
        3,
        "pw",
    )
    conf = celery_config(settings)
    assert conf["broker_url"] == "redis://:pw@10.0.0.5:6380/3"
    assert conf["broker_transport_options"] == {
        "visibility_timeout": 3600,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
    }
    assert conf["broker_connection_max_retries"] is None


def test_sentinels_parse_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")
    monkeypatch.setenv("REDIS_SENTINELS", " s1.example:26379, 10.0.0.2:26380 ,[::1]:26381")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "refunds")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "sentinel-pw")
    monkeypatch.setenv("REDIS_URL", "redis://app:data%40pw@ignored:1/2")
    settings = load_settings()
    assert settings.uses_sentinel
    assert settings.redis_sentinels == [("s1.example", 26379), ("10.0.0.2", 26380), ("::1", 26381)]
    assert settings.redis_sentinel_master == "refunds"
    assert broker_url(settings) == (
        "sentinel://app:data%40pw@s1.example:26379/2;"
        "sentinel://app:data%40pw@10.0.0.2:26380/2;"
        "sentinel://app:data%40pw@[::1]:26381/2"
    )
    options = celery_config(settings)["broker_transport_options"]
    assert options["master_name"] == "refunds"
    assert options["visibility_timeout"] == 3600
    creds = options["sentinel_kwargs"]["credential_provider"]
    assert isinstance(creds, SentinelCredentials)
    assert creds.get_credentials() == ("sentinel-pw",)
    # Secrets stay out of anything printable.
    assert "sentinel-pw" not in repr(options)
    assert "sentinel-pw" not in str(settings.safe_summary())


def test_sentinel_client_targets_the_named_master() -> None:
    settings = load_settings(
        **BASE,
        redis_url="redis://:data-pw@ignored/4",
        redis_sentinels="127.0.0.1:1,127.0.0.1:2",
        redis_sentinel_master="mymaster",
    )
    client = redis_client(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 4
    assert pool.connection_kwargs["password"] == "data-pw"
    assert pool.connection_kwargs["decode_responses"] is True
    # Nothing listens on ports 1 and 2: the client fails with a Redis error, not at build time.
    with pytest.raises(redis.RedisError):
        client.ping()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"redis_sentinels": "host-without-port", "redis_sentinel_master": "m"}, "host:port"),
        ({"redis_sentinels": "h:notaport", "redis_sentinel_master": "m"}, "host:port"),
        ({"redis_sentinels": ":26379", "redis_sentinel_master": "m"}, "host:port"),
        ({"redis_sentinels": "h:70000", "redis_sentinel_master": "m"}, "out of range"),
        ({"redis_sentinels": "h:1,h:1", "redis_sentinel_master": "m"}, "listed twice"),
        ({"redis_sentinels": "h:1", "redis_sentinel_master": "  "}, "master name"),
        ({"redis_sentinels": "h:1", "redis_sentinel_master": "a b"}, "master name"),
        ({"redis_sentinels": "h:1"}, "set together"),
        ({"redis_sentinel_master": "m"}, "set together"),
        ({"min_replica_acks": -1}, "MIN_REPLICA_ACKS"),
        ({"min_replica_acks": 1, "replica_ack_timeout_ms": 0}, "REPLICA_ACK_TIMEOUT_MS"),
        ({"min_replica_acks": 1, "replica_ack_timeout_ms": 50_000}, "soft time limit"),
    ],
)
def test_bad_values_give_one_line_config_error(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**BASE, **overrides)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


def test_sentinel_password_never_in_error_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**BASE, redis_sentinel_password="hunter2-secret", redis_sentinels="h:1")
    assert "hunter2-secret" not in str(caught.value)
