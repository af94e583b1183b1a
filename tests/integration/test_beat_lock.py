"""Only one beat schedules: two real ``celery beat`` processes tick at one beat's rate.

A private redis-server (keyspace notifications on) and one worker; every tick the worker runs
writes the ledger's heartbeat key, and each write is one notification, so the test counts tick
runs exactly. Two beats for a few seconds must give one beat's rate (tick 0.25 s: about 4 a
second, not 8); the standby logs once at WARNING, naming the holder; SIGKILLing the holder lets
the standby take over within the lock's TTL (2 s here) and the rate stays one beat's. The same
holds for two workers each started with ``-B`` (an embedded beat per replica), one of which stops.
The holder renews its lock about once per tick, not once per ``tick()`` call (Celery calls it in a
busy loop for the last 10 ms before an entry is due): counted with Redis's own command statistics.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.lock import Lock

from config.celery import ALL_QUEUES
from devstack.localstack import (
    Child,
    free_port,
    start_beat,
    start_redis,
    start_worker,
    wait_for_worker,
)
from devstack.wait import wait_until
from refunds.store.beat import BEAT_LOCK_KEY, BeatLock, lock_ttl
from refunds.store.keys import LAST_TICK
from tests.conftest import TEST_ENV

TICK = float(TEST_ENV["REFUNDS_TICK_INTERVAL"])
TTL = lock_ttl(TICK)


@pytest.fixture(scope="module")
def beat_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("beat-redis"))
    client = redis.Redis.from_url(url)
    client.config_set("notify-keyspace-events", "K$")
    yield url
    child.stop()


class TickCounter:
    """Times of the heartbeat writes (one per tick run), from keyspace notifications."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(f"__keyspace@0__:{LAST_TICK}")
        self.pubsub.get_message(timeout=1)  # the subscribe confirmation

    def collect(self, seconds: float) -> list[float]:
        times: list[float] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.pubsub.get_message(timeout=min(left, 0.5))
            if msg is not None and msg["type"] == "message":
                times.append(time.monotonic())
        return times


def _lines(child: Child) -> list[dict[str, object]]:
    out = []
    for line in child.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _holder_pid(client: redis.Redis) -> int:
    value = client.get(BEAT_LOCK_KEY)
    assert isinstance(value, bytes), "nobody holds the beat lock"
    return int(value.decode().split(":")[1])


def test_two_beats_tick_at_one_beats_rate_and_the_standby_takes_over(
    beat_redis: str, env: dict[str, str], tmp_path: Path
) -> None:
    worker_env = {**env, "REDIS_URL": beat_redis}
    client = redis.Redis.from_url(beat_redis)
    children: list[Child] = []
    try:
        worker = start_worker(tmp_path, worker_env, name="tick-worker", concurrency=2)
        children.append(worker)
        wait_for_worker(worker)
        counter = TickCounter(beat_redis)
        first = start_beat(tmp_path, worker_env, name="beat-a")
        children.append(first)
        one = counter.collect(6.0)[4:]  # skip beat start-up
        one_rate = (len(one) - 1) / (one[-1] - one[0])
        assert 0.6 / TICK <= one_rate <= 1.3 / TICK, one_rate

        second = start_beat(tmp_path, worker_env, name="beat-b")
        children.append(second)
        counter.collect(3.0)  # both beats up (and the notifications so far read)
        both = counter.collect(6.0)
        rate = len(both) / 6.0
        assert 0.6 / TICK <= rate <= 1.3 / TICK, f"{rate:.1f} ticks/s with two beats"
        assert _holder_pid(client) == first.proc.pid  # type: ignore[union-attr]
        standby = [
            line
            for line in _lines(second)
            if line.get("level") == "warning" and "stands by" in str(line.get("msg"))
        ]
        assert len(standby) == 1, second.tail()
        assert f":{first.proc.pid}:" in str(standby[0]["msg"])  # type: ignore[union-attr]

        first.signal(signal.SIGKILL)  # the holder dies without releasing
        killed = time.monotonic()
        after = counter.collect(TTL + 6.0)
        assert after, "no tick after the holder was killed"
        resumed = [t for t in after if t - killed > 0.5]  # a tick already queued may still run
        assert resumed and resumed[0] - killed <= TTL + 1.5, resumed[:1]
        assert _holder_pid(client) == second.proc.pid  # type: ignore[union-attr]
        assert any("took over" in str(line.get("msg")) for line in _lines(second))
        tail = [t for t in after if t - killed > TTL + 1.0]
        assert 0.6 / TICK <= (len(tail) - 1) / (tail[-1] - tail[0]) <= 1.3 / TICK
    finally:
        for child in children:
            child.stop()


def _worker_with_beat(logdir: Path, env: dict[str, str], name: str) -> Child:
    """A worker with an embedded beat (``-B``), as someone might run on every replica."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "-B",
        "--schedule",
        str(logdir / f"{name}-schedule"),
        "--loglevel",
        "INFO",
        "--concurrency",
        "1",
        "-Q",
        ALL_QUEUES,
        "--hostname",
        f"{name}-{free_port()}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    return Child(name, args, logdir / f"{name}.log", dict(env)).start()


def test_worker_dash_b_on_every_replica_ticks_once(
    beat_redis: str, env: dict[str, str], tmp_path: Path
) -> None:
    run_env = {**env, "REDIS_URL": beat_redis}
    redis.Redis.from_url(beat_redis).delete(BEAT_LOCK_KEY)
    children: list[Child] = []
    try:
        for name in ("replica-a", "replica-b"):
            child = _worker_with_beat(tmp_path, run_env, name)
            children.append(child)
            wait_for_worker(child)
        counter = TickCounter(beat_redis)
        counter.collect(3.0)  # both embedded beats up
        both = counter.collect(6.0)
        rate = len(both) / 6.0
        assert 0.6 / TICK <= rate <= 1.3 / TICK, f"{rate:.1f} ticks/s with two -B workers"

        def says(child: Child, words: str) -> int:
            return sum(1 for line in _lines(child) if words in str(line.get("msg")))

        standby = [c for c in children if says(c, "stands by")]
        holder = [c for c in children if c not in standby]
        assert len(standby) == 1 and len(holder) == 1, [c.tail() for c in children]
        assert says(standby[0], "stands by") == 1

        holder[0].stop()  # a replica goes away (warm shutdown)
        stopped = time.monotonic()
        after = counter.collect(TTL + 5.0)
        resumed = [t for t in after if t - stopped > 0.5]
        assert resumed and resumed[0] - stopped <= TTL + 1.5, resumed[:1]
        assert says(standby[0], "took over") == 1
    finally:
        for child in children:
            child.stop()


def test_the_lock_is_token_checked_expires_and_is_released(beat_redis: str) -> None:
    """``BeatLock`` on its own: one holder, renewal only by the holder, expiry, release."""
    client = redis.Redis.from_url(beat_redis, decode_responses=True)
    client.delete(BEAT_LOCK_KEY)
    a = BeatLock(client, ttl=0.5, name="host-a:1:aa")
    b = BeatLock(client, ttl=0.5, name="host-b:2:bb")
    assert a.hold()
    assert not b.hold()
    assert b.holder() == "host-a:1:aa"
    time.sleep(0.3)
    assert a.hold()  # renewed: the TTL starts again
    time.sleep(0.3)
    assert not b.hold()  # 0.6 s after a's first hold, but only 0.3 s after its renewal
    time.sleep(0.6)  # a stops renewing (it died): the key expires
    assert b.hold()
    assert b.holder() == "host-b:2:bb"
    assert not a.hold()  # a's token is gone: it must not send
    assert not a.held
    b.release()
    assert b.holder() is None
    assert a.hold()
    a.release()


def _calls(client: redis.Redis, command: str) -> int:
    """Calls of ``command`` that ran without an error (a NOSCRIPT answer, after which redis-py
    loads the script and calls again, is not a renewal) since the last CONFIG RESETSTAT, from all
    clients of the server."""
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


def test_the_holder_renews_at_most_once_per_renew_every(beat_redis: str) -> None:
    """``BeatLock`` on its own: many wake-ups in a row cost no round trip; one renewal per
    ``renew_every``; a holder whose lock was taken finds out at its next renewal."""
    client = redis.Redis.from_url(beat_redis, decode_responses=True)
    client.delete(BEAT_LOCK_KEY)
    lock = BeatLock(client, ttl=2.0, name="host-a:1:aa")
    assert lock.renew_every == 0.25
    client.script_load(Lock.LUA_REACQUIRE_SCRIPT)  # so the renewal below is one EVALSHA
    client.config_resetstat()
    assert all(lock.hold() for _ in range(50))  # as in Celery's busy loop before a due entry
    assert (_calls(client, "set"), _calls(client, "evalsha")) == (1, 0)  # the acquisition only
    time.sleep(lock.renew_every)
    assert all(lock.hold() for _ in range(50))
    assert _calls(client, "evalsha") == 1  # one token-checked renewal
    client.set(BEAT_LOCK_KEY, "host-b:2:bb", px=2000)  # another beat holds it now
    time.sleep(lock.renew_every)
    assert not lock.hold()  # found out at the renewal: it stops sending
    assert not lock.held
    client.delete(BEAT_LOCK_KEY)


def test_a_running_beat_renews_its_lock_about_once_per_tick(
    beat_redis: str, env: dict[str, str], tmp_path: Path
) -> None:
    """A real ``celery beat`` alone on the private Redis: every EVALSHA is a lock renewal and
    every LPUSH a tick sent. Renewing on every ``tick()`` call made 10-20 EVALSHAs per tick."""
    client = redis.Redis.from_url(beat_redis, decode_responses=True)
    client.flushdb()
    beat = start_beat(tmp_path, {**env, "REDIS_URL": beat_redis}, name="beat-count")
    try:
        wait_until(lambda: client.get(BEAT_LOCK_KEY), 60, what="the beat lock held", child=beat)
        time.sleep(1.0)  # past start-up
        client.config_resetstat()
        seconds = 4.0
        time.sleep(seconds)
        renewals, sent = _calls(client, "evalsha"), _calls(client, "lpush")
    finally:
        beat.stop()
        client.flushdb()
    assert sent >= 0.6 * seconds / TICK, sent  # it ticks at its rate
    assert renewals <= sent + 1, f"{renewals} renewals for {sent} ticks sent"
    assert renewals >= seconds / (TTL / 2), renewals  # and keeps its lock alive
