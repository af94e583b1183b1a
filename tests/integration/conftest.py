"""Fixtures of the CLI tests (test_cli*.py): a private Redis per module, a flushed database per
test, and the environment a CLI subprocess gets (nothing inherited but what a process needs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from devstack.localstack import Child, start_redis
from tests.integration.test_cli import base_env


@pytest.fixture(scope="module")
def cli_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child: Child
    child, url = start_redis(tmp_path_factory.mktemp("cli-redis"), appendonly=False)
    yield url
    child.stop()


@pytest.fixture
def db(cli_redis: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(cli_redis, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def env(cli_redis: str) -> dict[str, str]:
    return {**base_env(), "REDIS_URL": cli_redis, "REFUNDS_PROFILE": "sandbox"}
