"""``refunds submit --file`` with files as Excel and other tools write them (issue 9).

The console script runs as a real subprocess against a private Redis (no worker: records stay
``received``), as in test_cli.py, whose helpers this module reuses.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devstack.localstack import Child, start_redis
from refunds.store.keys import record_key
from tests.integration.test_cli import (
    COMMAND,
    REPO,
    assert_no_traceback,
    base_env,
    record_keys,
    run,
    run_json,
)

HEADER = "originalTransactionType,originalTransactionId,clientReference,refundAddress\n"


@pytest.fixture(scope="module")
def cli_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child: Child
    child, url = start_redis(tmp_path_factory.mktemp("cli-batch-redis"), appendonly=False)
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


def line(ref: str, txn: str | None = None, kind: int = 1) -> str:
    """One JSONL intent; its own payment unless ``txn`` says (one payment, one reference)."""
    return json.dumps({"originalTransactionType": kind, "originalTransactionId": txn or f"tx-{ref}",
                       "clientReference": ref}) + "\n"


def test_every_problem_of_an_excel_csv_is_listed_and_nothing_written(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "export.csv"
    batch.write_bytes(
        HEADER.encode()
        + b"1,tx-1,ok-1,\r\n"
        + b"1,9.91214E+15,ok-2,\r\n"  # Excel's General cell for 9912140000000001
        + b"1,tx-3,ref-\xe9,\r\n"  # cp1252, Excel's plain "CSV"
        + b"1,tx-4,ok-4,\r\n1,tx-5,ok-4,\r\n"
    )
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr.splitlines() == [
        "line 3: originalTransactionId: '9.91214E+15' looks like Excel scientific notation: "
        "Excel turned a long number into an approximation and the digits are lost. Format the "
        "column as Text in Excel (before typing or pasting the ids) and export the file again",
        "line 4: line: not valid UTF-8 (byte 0xe9 at column 12); save the file as UTF-8 (in "
        "Excel: CSV UTF-8)",
        "line 6: clientReference: 'ok-4' is also on line 5 with different "
        "originalTransactionId",
        f"refunds: {batch}: 3 problems; nothing was submitted",
    ]
    assert record_keys(db) == []


def test_a_jsonl_key_given_twice_is_refused(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "twice.jsonl"
    batch.write_text(
        line("ok-1")
        + '{"originalTransactionType": 1, "originalTransactionId": "tx-2", '
        '"clientReference": "a", "clientReference": "b"}\n'
    )
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "line 2: clientReference: appears twice in the object",
        f"refunds: {batch}: 1 problem; nothing was submitted",
    ]
    assert record_keys(db) == []


def test_many_problems_are_capped_with_the_total(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "bad.jsonl"
    batch.write_text("".join(line(f"r-{n}", kind=9) for n in range(130)))
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 102
    assert lines[99].startswith("line 100: originalTransactionType: ")
    assert lines[100] == "... and 30 more (the first 100 are listed)"
    assert lines[101] == f"refunds: {batch}: 130 problems; nothing was submitted"
    assert record_keys(db) == []


def test_duplicate_rows_are_submitted_once_and_reported(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "twice.jsonl"
    batch.write_text(line("d-1") + line("d-2") + line("d-1") + "\n" + line("d-2"))
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "created: 2", "already existing: 0", "conflicts: 0",
        "duplicate rows: 2 (identical repeats, submitted once): line 3 (same as 1), "
        "5 (same as 2)",
    ]
    assert record_keys(db) == [record_key("d-1"), record_key("d-2")]
    assert run_json(env, "submit", "--file", str(batch)) == {
        "created": 0, "existing": 2, "conflicts": [],
        "duplicates": {"count": 2, "rows": [{"line": 3, "sameAs": 1}, {"line": 5, "sameAs": 2}]},
    }


def test_a_batch_larger_than_one_chunk_is_streamed_whole(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    batch = tmp_path / "big.csv"
    batch.write_text(HEADER + "".join(f"1,tx-{n},big-{n},\n" for n in range(2_500)))
    assert run_json(env, "submit", "--file", str(batch), "--quiet") == {
        "created": 2_500, "existing": 0, "conflicts": [],
    }
    assert len(record_keys(db)) == 2_500


def test_standard_input_is_read_with_a_format(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    data = line("in-1") + line("in-2") + line("in-3")
    spool_dir = tmp_path / "spool"  # where the copy of stdin goes (TMPDIR), and is removed from
    spool_dir.mkdir()

    def pipe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMMAND, "submit", "--file", "-", *args], env={**env, "TMPDIR": str(spool_dir)},
            cwd=REPO, input=data,
            capture_output=True, text=True, timeout=60, check=False,
        )

    refused = pipe()
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1] == (
        "refunds: standard input: 1 problem; nothing was submitted"
    )
    assert "cannot tell the format from standard input" in refused.stderr
    done = pipe("--format", "jsonl", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"created": 3, "existing": 0, "conflicts": []}
    assert record_keys(db) == [record_key(f"in-{i}") for i in (1, 2, 3)]
    assert list(spool_dir.iterdir()) == []


def test_a_named_pipe_is_spooled_and_read_twice(
    env: dict[str, str], db: redis.Redis, tmp_path: Path
) -> None:
    fifo = tmp_path / "intents.jsonl"
    os.mkfifo(fifo)
    data = line("fifo-1") + line("fifo-2")
    proc = subprocess.Popen(
        [*COMMAND, "submit", "--file", str(fifo), "--json"], env=env, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    fifo.write_text(data)  # blocks until the CLI opens the pipe, once
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout) == {"created": 2, "existing": 0, "conflicts": []}
    assert record_keys(db) == [record_key("fifo-1"), record_key("fifo-2")]
