"""Every Redis client the pipeline builds carries its own socket bounds and no hidden retries.

redis-py's defaults differ by version (7.x: no socket timeout; ``Redis()``: ten retries, timeouts
included; 8.x: 5 s), and kombu's default socket timeout is none: a frozen Redis must give a
bounded answer whatever the installed client, so the bounds are set, never inherited.
"""

from __future__ import annotations

import pytest

from config.celery import celery_config
from config.redis_connection import (
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    client_from_url,
    redis_client,
    sentinel,
)
from config.settings import load_settings


def _connection_bounds(kwargs: dict[str, object]) -> tuple[object, object, int]:
    retry = kwargs["retry"]
    return kwargs["socket_timeout"], kwargs["socket_connect_timeout"], retry.get_retries()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "overrides",
    [
        {"redis_url": "redis://127.0.0.1:1/0"},
        {
            "redis_url": "redis://:pw@ignored/2",
            "redis_sentinels": "127.0.0.1:1",
            "redis_sentinel_master": "m",
        },
    ],
    ids=["url", "sentinel"],
)
def test_the_data_client_has_socket_timeouts_and_no_retries(overrides: dict[str, str]) -> None:
    client = redis_client(load_settings(profile="sandbox", **overrides))
    kwargs = client.connection_pool.connection_kwargs
    assert _connection_bounds(kwargs) == (SOCKET_TIMEOUT, CONNECT_TIMEOUT, 0)


def test_a_client_from_a_bare_url_has_the_same_bounds() -> None:
    kwargs = client_from_url("redis://127.0.0.1:1/0").connection_pool.connection_kwargs
    assert _connection_bounds(kwargs) == (SOCKET_TIMEOUT, CONNECT_TIMEOUT, 0)


def test_the_sentinels_own_clients_have_both_timeouts() -> None:
    settings = load_settings(
        profile="sandbox", redis_sentinels="127.0.0.1:1", redis_sentinel_master="m"
    )
    found = sentinel(settings)
    kwargs = found.sentinels[0].connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == CONNECT_TIMEOUT
    assert kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT
    assert found.connection_kwargs["socket_timeout"] == SOCKET_TIMEOUT


@pytest.mark.parametrize("sentinels", ["", "127.0.0.1:1"])
def test_celery_broker_connections_have_socket_timeouts(sentinels: str) -> None:
    overrides = {"redis_sentinels": sentinels, "redis_sentinel_master": "m"} if sentinels else {}
    options = celery_config(load_settings(profile="sandbox", **overrides))[
        "broker_transport_options"
    ]
    assert options["socket_timeout"] == SOCKET_TIMEOUT
    assert options["socket_connect_timeout"] == CONNECT_TIMEOUT


def test_a_replica_wait_longer_than_the_socket_timeout_widens_it() -> None:
    settings = load_settings(
        profile="sandbox",
        min_replica_acks=1,
        replica_ack_timeout_ms=7000,
        task_soft_time_limit=30,
        task_time_limit=40,
        lease_seconds=60,
    )
    kwargs = redis_client(settings).connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 8.0
