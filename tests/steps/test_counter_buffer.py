"""Provider-call counters are buffered per process and written at most once a second (issue 12).

Against the steps' private Redis: the counts reach Redis exactly (calls, latency buckets, latency
sum) within the flush period, in one pipelined write for many calls, and a process exit's
``flush_all`` writes what is still pending.
"""

from __future__ import annotations

import time

import redis

from refunds.context import Context
from refunds.ops.counters import Stats
from refunds.store.counters import flush_all


def _hincr_commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
        for name in ("hincrby", "hincrbyfloat")
    )


def _wait(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_calls_are_counted_exactly_within_a_flush_period_in_one_write(ctx: Context) -> None:
    client = ctx.ledger.redis
    stats = Stats(client, flush_seconds=0.5)
    before = _hincr_commands(client)
    for _ in range(40):
        stats.record_call("get", "200", 0.003)
    stats.record_call("create", "503", 0.2)
    stats.record_call("confirm", "timeout", None)
    assert stats.calls() == {}  # nothing written yet: the calls cost no Redis command
    assert _wait(
        lambda: (
            stats.calls() == {("get", "200"): 40, ("create", "503"): 1, ("confirm", "timeout"): 1}
        ),
        5.0,
    )
    latency = stats.latency()
    assert latency["get"]["0.005"] == 40
    assert abs(latency["get"]["sum"] - 0.12) < 1e-9
    assert latency["create"] == {"0.25": 1, "sum": 0.2}
    assert "confirm" not in latency  # a timeout has no latency
    # 42 calls: one flush of 3 HINCRBYs for the calls, 2 for the buckets, 2 HINCRBYFLOATs.
    assert _hincr_commands(client) - before == 7


def test_flush_all_writes_pending_counts_at_exit(ctx: Context) -> None:
    client = ctx.ledger.redis
    stats = Stats(client, flush_seconds=60)  # the flusher would not write within this test
    stats.record_call("token", "200", 0.01)
    stats.record_call("token", "200", 0.01)
    assert stats.calls() == {}
    flush_all()
    assert stats.calls() == {("token", "200"): 2}
    flush_all()  # nothing pending: nothing written twice
    assert stats.calls() == {("token", "200"): 2}


def test_flush_keeps_counts_when_redis_fails(ctx: Context) -> None:
    client = ctx.ledger.redis
    broken = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    stats = Stats(broken, flush_seconds=60)
    stats.record_call("get", "200", 0.001)
    try:
        stats.flush()
    except redis.ConnectionError:
        pass
    else:
        raise AssertionError("a flush to an unreachable Redis must fail")
    stats.redis = client  # Redis is back: the kept count is written once
    stats.flush()
    assert Stats(client).calls() == {("get", "200"): 1}


def test_write_through_when_flush_seconds_is_zero(ctx: Context) -> None:
    stats = Stats(ctx.ledger.redis, flush_seconds=0)
    stats.record_call("create", "200", 0.02)
    assert stats.calls() == {("create", "200"): 1}
