"""The store's Lua scripts against a real Redis whose script cache is emptied between calls.

``SCRIPT FLUSH`` is what a restart or a failover to a replica that never ran our scripts looks
like to a client: every EVALSHA answers NOSCRIPT. Each store part must load its script and run
the call again, with the call's normal answer, directly and inside a pipelined batch. Also: the
scripts are files shipped in the wheel, and each reads Redis TIME through the one shared helper.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import cast

import pytest
import redis

from refunds.models import RefundIntent, State
from refunds.store.events import EventStore
from refunds.store.ledger import Ledger
from refunds.store.outbox import Outbox
from refunds.store.pacing import CredentialsGate, Pacer
from refunds.store.scripts import Script, ScriptBatch, source
from refunds.store.tokens import TokenStore

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "refunds" / "store" / "lua"


def _intent(ref: str) -> RefundIntent:
    return RefundIntent.parse(
        # One payment per reference (one payment is refunded under one reference).
        {"originalTransactionType": 1, "originalTransactionId": f"tx-{ref}", "clientReference": ref}
    )


@pytest.fixture
def client(redis_db: str) -> Iterator[redis.Redis]:
    """A fresh database of the private Redis; its server's script cache is flushed per call."""
    yield redis.Redis.from_url(redis_db, decode_responses=True)


def flush(client: redis.Redis) -> redis.Redis:
    client.script_flush()
    assert client.script_exists(Script(client, "ledger_submit").sha) == [False]
    return client


def test_a_step_runs_through_with_the_script_cache_flushed_before_every_call(
    client: redis.Redis,
) -> None:
    ledger = Ledger(client)
    flush(client)
    assert ledger.submit(_intent("a"), due_in=30).created
    flush(client)
    ledger.set_due_in("a", -1)
    flush(client)
    [(ref, state, fence)] = ledger.claim_dispatch(30, 10)
    assert (ref, state, fence) == ("a", "received", 1)
    flush(client)
    lock, _ = ledger.try_lock("a", 30, start=True, fence=fence)
    assert lock is not None and lock.held and lock.began and lock.record is not None
    flush(client)
    assert ledger.beat(lock, 30, version=lock.record.version)
    flush(client)
    written = ledger.write(
        lock.record, State.CREATING, "create", timer="set", due_in=60, release=lock, history=True
    )
    assert written.record.state == State.CREATING
    assert [h.to_state for h in written.record.history] == [State.RECEIVED, State.CREATING]
    assert written.parked is False  # the release ran in the same script
    flush(client)
    ledger.due_soon("a", -5)
    flush(client)
    assert ledger.claim_due_states(30, 10) == [("a", "creating")]
    lock2, _ = ledger.try_lock("a", 30)
    assert lock2 is not None and lock2.held
    flush(client)
    ledger.unlock("a", lock2)
    assert ledger.lock("a", 30) is not None  # released, though its script was gone


def test_a_batch_reruns_only_the_calls_redis_answered_noscript(client: redis.Redis) -> None:
    loaded = Script(client, "timers_set_due_in")
    missing = Script(client, "timers_due_soon")
    flush(client)
    loaded.load()
    batch = ScriptBatch(client)
    batch.add(loaded, ["z"], ["100", "a"])
    batch.add(missing, ["z"], ["50", "a"])  # NOSCRIPT inside the pipeline, then run alone
    batch.add(loaded, ["z"], ["200", "b"])
    assert batch.execute() == [1, 0, 1]
    scores = dict(cast(list[tuple[str, float]], client.zrange("z", 0, -1, withscores=True)))
    assert scores["a"] < scores["b"] - 120  # a came forward by ~50 s, b stayed ~100 s later


def test_a_batch_raises_the_first_error_that_is_not_noscript(client: redis.Redis) -> None:
    client.set("z", "not a sorted set")
    batch = ScriptBatch(client)
    batch.add(Script(client, "timers_set_due_in"), ["z"], ["1", "a"])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        batch.execute()


def test_batch_intake_loads_its_script_after_a_flush_and_asks_no_script_exists(
    client: redis.Redis,
) -> None:
    ledger = Ledger(client)
    ledger.submit(_intent("old"), due_in=30)
    flush(client)

    def exists_calls() -> int:
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))

    before = exists_calls()
    results = ledger.submit_many([_intent("old"), _intent("new-1"), _intent("new-2")], due_in=30)
    assert [getattr(r, "created", None) for r in results] == [False, True, True]
    assert sorted(ledger.references()) == ["new-1", "new-2", "old"]
    # redis-py's pipelined scripts ask SCRIPT EXISTS first: one more round trip per batch.
    assert exists_calls() == before


def test_pacing_and_credentials_gate_survive_a_flushed_cache(client: redis.Redis) -> None:
    pacer = Pacer(client, max_rps=10, max_wait=1.0)
    flush(client)
    assert pacer.reserve().granted
    flush(client)
    assert 4.0 < pacer.push_back(5.0) <= 5.0
    flush(client)
    assert 4.0 < pacer.wait_now() <= 5.0
    gate = CredentialsGate(client, pause=30.0)
    flush(client)
    assert gate.refused()  # the first refusal: this caller logs
    flush(client)
    assert gate.may_call() is not None  # within the pause: no probe yet
    flush(client)
    assert gate.accepted()


def test_outbox_events_and_tokens_survive_a_flushed_cache(client: redis.Redis) -> None:
    outbox = Outbox(client)
    flush(client)
    assert outbox.record_failure("task:a", "boom").attempts == 1
    flush(client)
    assert outbox.retry_in("task:a", 60) > 0
    flush(client)
    outbox.bury("task:a")
    assert outbox.dead() == ["task:a"]
    flush(client)
    assert outbox.replay(["task:a"]) == ["task:a"]
    flush(client)
    outbox.done("task:a")
    assert outbox.count() == 0
    events = EventStore(client)
    flush(client)
    assert events.store("n1", b"{}", at=1.0) == "new"
    flush(client)
    assert events.park("n1", "a", at=1.0, version=None)
    tokens = TokenStore(client)
    tokens.write("tok", lifetime=60, margin=5)
    flush(client)
    assert tokens.invalidate("tok")


def test_every_script_file_is_used_and_reads_the_clock_only_through_the_prelude() -> None:
    names = sorted(p.stem for p in LUA.glob("*.lua"))
    assert "prelude" in names
    used = set()
    for module in (ROOT / "refunds" / "store").glob("*.py"):
        text = module.read_text()
        used |= {n for n in names if f'"{n}"' in text and n != "prelude"}
    assert sorted(used) == [n for n in names if n != "prelude"]
    for name in used:
        body = (LUA / f"{name}.lua").read_text()
        assert "'TIME'" not in body, name  # now() is the one clock
        assert source(name).startswith((LUA / "prelude.lua").read_text())


def test_the_wheel_ships_every_lua_script(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"),
    )
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(tree)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".lua")}
    expected = {f"refunds/store/lua/{p.name}" for p in LUA.glob("*.lua")}
    assert shipped == expected
    packaged = resources.files("refunds.store").joinpath("lua")
    assert {p.name for p in packaged.iterdir()} >= {p.name for p in LUA.glob("*.lua")}


def test_the_beat_lock_renews_and_releases_after_a_flushed_cache(client: redis.Redis) -> None:
    """Beat's lock runs redis-py's own Lock scripts (``redis.lock.Lock``), which reload on
    NOSCRIPT by themselves: the one scripted path that is not a ``Script`` of ours."""
    from refunds.store.beat import BeatLock  # noqa: PLC0415 - only this test needs it

    lock = BeatLock(client, ttl=4.0, name="beat-a", renew_every=0.0)
    assert lock.hold()
    flush(client)
    assert lock.hold()  # a renewal: the reacquire script
    flush(client)
    lock.release()  # the release script
    assert lock.holder() is None
