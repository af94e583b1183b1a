"""The `refunds` console script, run as a real subprocess against a private Redis.

No worker runs here (records stay `received`), except in the demo test, which starts its own
Redis, sandbox, worker and beat through `refunds demo`. The machine's shared Redis is never used:
every subprocess gets a clean environment that names the private one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from devstack.localstack import Child, start_redis
from refunds.models import State
from refunds.store.keys import RECORD_PATTERN, record_key
from refunds.store.ledger import Ledger

SCRIPT = Path(sys.executable).parent / "refunds"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "refunds.cli"]
REPO = Path(__file__).resolve().parents[2]


def base_env() -> dict[str, str]:
    """Only what a process needs to run: no MCE_*, REDIS_URL or REFUNDS_* from the caller (but
    the session's archive database, which the CLI's reads require)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "REFUNDS_DATABASE_URL")
    return {k: os.environ[k] for k in keep if k in os.environ}


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


def run(
    env: dict[str, str], *args: str, command: list[str] | None = None, timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(command or COMMAND), *args], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def run_json(env: dict[str, str], *args: str) -> Any:
    result = run(env, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def record_keys(db: redis.Redis) -> list[str]:
    return sorted(db.scan_iter(RECORD_PATTERN))


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


# --- submit ---------------------------------------------------------------------------------------


def test_submit_one_intent_prints_the_record(env: dict[str, str], db: redis.Redis) -> None:
    result = run(env, "submit", "--type", "1", "--txn-id", "tx-1", "--ref", "cli-1")
    assert result.returncode == 0, result.stderr
    assert "submitted cli-1" in result.stdout
    assert "received" in result.stdout
    assert record_keys(db) == [record_key("cli-1")]


def test_submit_json_prints_the_public_record(env: dict[str, str], db: redis.Redis) -> None:
    record = run_json(env, "submit", "--type", "2", "--txn-id", "tx-2", "--ref", "cli-2",
                      "--address", "TAddr1")
    assert record["clientReference"] == "cli-2"
    assert record["state"] == "received"
    assert record["originalTransactionType"] == 2
    assert record["originalTransactionId"] == "tx-2"
    assert record["refundAddress"] == "TAddr1"
    assert [h["to"] for h in record["history"]] == ["received"]


def test_submitting_the_same_intent_again_returns_the_same_record(
    env: dict[str, str], db: redis.Redis
) -> None:
    args = ("submit", "--type", "1", "--txn-id", "tx-3", "--ref", "cli-3")
    first = run_json(env, *args)
    second = run_json(env, *args)
    assert second == first
    human = run(env, *args)
    assert human.returncode == 0
    assert "already submitted" in human.stdout
    assert record_keys(db) == [record_key("cli-3")]


def test_same_reference_with_other_content_is_a_conflict(
    env: dict[str, str], db: redis.Redis
) -> None:
    assert run(env, "submit", "--type", "1", "--txn-id", "tx-4", "--ref", "cli-4").returncode == 0
    result = run(env, "submit", "--type", "1", "--txn-id", "tx-OTHER", "--ref", "cli-4")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "refunds: clientReference 'cli-4' already exists with different originalTransactionId"
    )
    assert run_json(env, "status", "cli-4")["originalTransactionId"] == "tx-4"


def test_invalid_single_intent_exits_2_and_writes_nothing(
    env: dict[str, str], db: redis.Redis
) -> None:
    result = run(env, "submit", "--type", "9", "--txn-id", "tx-5", "--ref", "has space")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("originalTransactionType (--type): must be one of")
    assert lines[1].startswith("clientReference (--ref): U+0020 SPACE at position 4 is not allowed")
    assert lines[-1] == "refunds: invalid intent; nothing was submitted"
    assert record_keys(db) == []


def test_invalid_batch_lists_every_bad_line_and_writes_nothing(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "bad.jsonl"
    def line(kind: int, txn: str, ref: str) -> str:
        return json.dumps({"originalTransactionType": kind, "originalTransactionId": txn,
                           "clientReference": ref}) + "\n"

    batch.write_text(
        line(1, "tx-a", "ok-1") + line(1, "tx-b", "b c") + "{not json\n" + line(4, "tx-d", "ok-4")
    )
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 2
    assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("line 2: clientReference: U+0020 SPACE at position 2 is not allowed")
    assert lines[1].startswith("line 3: line: not valid JSON: ")
    assert lines[2].startswith("line 4: originalTransactionType: must be one of")
    assert lines[3] == f"refunds: {batch}: 3 problems; nothing was submitted"
    assert record_keys(db) == []


def test_valid_csv_batch_is_submitted_with_a_summary(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "refunds.csv"
    batch.write_text(
        "originalTransactionType,originalTransactionId,clientReference,refundAddress\n"
        "1,tx-c1,csv-1,\n2,tx-c2,csv-2,TAddr2\n3,tx-c3,csv-3,\n"
    )
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == [
        "created: 3", "already existing: 0", "conflicts: 0",
    ]
    assert record_keys(db) == [record_key(f"csv-{i}") for i in (1, 2, 3)]
    assert run_json(env, "status", "csv-1")["refundAddress"] is None
    assert run_json(env, "status", "csv-2")["refundAddress"] == "TAddr2"

    again = run_json(env, "submit", "--file", str(batch))
    assert again == {"created": 0, "existing": 3, "conflicts": []}


def test_valid_jsonl_batch_is_submitted_and_conflicts_exit_1(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    rows = [{"originalTransactionType": 1, "originalTransactionId": f"tx-j{i}",
             "clientReference": f"jsonl-{i}"} for i in range(5)]
    batch = tmp_path / "refunds.ndjson"
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_json(env, "submit", "--file", str(batch), "--quiet") == {
        "created": 5, "existing": 0, "conflicts": [],
    }

    changed = tmp_path / "changed.txt"  # no known extension: --format says what it is
    rows[2]["originalTransactionId"] = "tx-changed"
    rows.append({"originalTransactionType": 1, "originalTransactionId": "tx-new",
                 "clientReference": "jsonl-new"})
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run(env, "submit", "--file", str(changed), "--format", "jsonl")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "created: 1", "already existing: 4", "conflicts: 1",
        "  clientReference 'jsonl-2' already exists with different originalTransactionId",
    ]
    assert run_json(env, "status", "jsonl-2")["originalTransactionId"] == "tx-j2"
    assert len(record_keys(db)) == 6


def test_submit_needs_either_flags_or_a_file(env: dict[str, str], db: redis.Redis) -> None:
    result = run(env, "submit", "--type", "1")
    assert result.returncode == 2
    assert "missing --txn-id, --ref" in result.stderr
    assert record_keys(db) == []


# --- status, list, watch --------------------------------------------------------------------------


def test_status_json_has_the_public_fields(env: dict[str, str], db: redis.Redis) -> None:
    run_json(env, "submit", "--type", "1", "--txn-id", "tx-s", "--ref", "stat-1")
    record = run_json(env, "status", "stat-1")
    assert record["clientReference"] == "stat-1"
    assert record["state"] == "received"
    for key in ("cryptoRefundId", "txnHash", "lastError", "createdAt", "updatedAt"):
        assert key in record
    assert record["cryptoRefundId"] is None and record["txnHash"] is None
    assert record["history"] == [
        {"at": record["history"][0]["at"], "from": None, "to": "received",
         "reason": "submitted", "actor": "pipeline"}
    ]
    human = run(env, "status", "stat-1")
    assert human.returncode == 0
    assert "history" in human.stdout and "submitted" in human.stdout


def test_status_of_an_unknown_reference_exits_1(env: dict[str, str], db: redis.Redis) -> None:
    result = run(env, "status", "no-such-ref")
    assert result.returncode == 1
    assert result.stderr.strip() == "refunds: no refund with clientReference 'no-such-ref'"
    assert result.stdout == ""


def test_list_json_is_an_array_and_state_filters(env: dict[str, str], db: redis.Redis) -> None:
    for i in range(3):
        run_json(env, "submit", "--type", "1", "--txn-id", f"tx-l{i}", "--ref", f"list-{i}")
    records = run_json(env, "list")
    assert [r["clientReference"] for r in records] == ["list-0", "list-1", "list-2"]
    assert run_json(env, "list", "--state", "received", "--limit", "2") == records[:2]
    assert run_json(env, "list", "--state", "completed") == []
    human = run(env, "list")
    assert human.returncode == 0
    assert "list-2" in human.stdout and "3 of 3" in human.stdout
    bad = run(env, "list", "--state", "done")
    assert bad.returncode == 2
    assert "'done' is not one of" in bad.stderr


def test_watch_once_prints_counts_by_state(env: dict[str, str], db: redis.Redis) -> None:
    run_json(env, "submit", "--type", "1", "--txn-id", "tx-w", "--ref", "watch-1")
    run_json(env, "submit", "--type", "1", "--txn-id", "tx-w2", "--ref", "other-1")
    result = run(env, "watch", "--once", "--refs-prefix", "watch-")
    assert result.returncode == 0, result.stderr
    assert re.search(r"received\s*│\s*1\s", result.stdout)
    assert "0/1 final" in result.stdout


def test_watch_exits_0_once_every_refund_in_view_is_final(
    env: dict[str, str], db: redis.Redis, cli_redis: str
) -> None:
    for ref in ("fin-1", "fin-2", "open-1"):
        run_json(env, "submit", "--type", "1", "--txn-id", f"tx-{ref}", "--ref", ref)
    ledger = Ledger.from_url(cli_redis)
    for ref in ("fin-1", "fin-2"):  # an operator's cancel: the quickest way to a final state
        ledger.transition(ledger.get(ref), State.CANCELLED, "test", actor="test")
    result = run(env, "watch", "--refs-prefix", "fin-", "--interval", "0.2", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "2/2 final" in result.stdout
    assert "cancelled=2" in result.stdout


# --- configuration and entry points ---------------------------------------------------------------


def test_missing_configuration_is_one_readable_line_and_exit_2(cli_redis: str) -> None:
    env = {**base_env(), "REDIS_URL": cli_redis}  # production profile, no MCE_* at all
    result = run(env, "list")
    assert result.returncode == 2
    assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("refunds: invalid configuration: MCE_BASE_URL is not set")


def test_unreachable_redis_is_a_readable_error(env: dict[str, str]) -> None:
    result = run({**env, "REDIS_URL": "redis://127.0.0.1:1/0"}, "status", "x")
    assert result.returncode == 75  # EX_TEMPFAIL: every Redis error, run it again later
    assert_no_traceback(result)
    assert result.stderr.startswith("refunds: cannot reach Redis")


def test_version_and_python_dash_m(env: dict[str, str]) -> None:
    result = run(env, "--version")
    assert result.returncode == 0
    assert re.fullmatch(r"refunds, version \S+\n", result.stdout)
    module = run(env, "--help", command=[sys.executable, "-m", "refunds.cli"])
    assert module.returncode == 0
    for name in ("submit", "status", "list", "watch", "sandbox", "demo"):
        assert name in module.stdout


# --- the demo, end to end -------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_demo_runs_five_refunds_to_completed() -> None:
    env = {**base_env(), "COLUMNS": "120"}  # no REDIS_URL: the demo starts its own Redis
    result = run(env, "demo", "--count", "5", "--processing-seconds", "0.5", timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_traceback(result)
    assert "5 of 5 completed" in result.stdout
    assert re.search(r"final states\s+completed 5\b", result.stdout)
    assert re.search(r"one create per ref\s+yes", result.stdout)
    assert "demo: stopping beat, web, workers, sandbox, redis" in result.stderr
    assert re.search(r"final by webhook\s+\d+ of 5", result.stdout)
