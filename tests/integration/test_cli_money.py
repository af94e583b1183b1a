"""The CLI shows amounts in plain decimal notation: a fee of 0.00000021 is "0.00000021", in the
human view and in ``--json`` (the real ``refunds`` console script against a private Redis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from devstack.localstack import start_redis
from refunds.models import RefundIntent, State
from refunds.store.ledger import Ledger

SCRIPT = Path(sys.executable).parent / "refunds"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "refunds.cli"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("cli-money-redis"), appendonly=False)
    yield url
    child.stop()


def run(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "REFUNDS_DATABASE_URL")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env |= {"REDIS_URL": redis_url, "REFUNDS_PROFILE": "sandbox", "COLUMNS": "200"}
    return subprocess.run(
        [*COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_status_shows_a_fee_of_0_00000021_as_such(redis_url: str) -> None:
    ledger = Ledger.from_url(redis_url)
    intent = RefundIntent.parse(
        {"originalTransactionType": 1, "originalTransactionId": "tx-fee", "clientReference": "fee"}
    )
    record = ledger.submit(intent, due_in=60).record
    ledger.transition(
        record,
        State.CREATING,
        "test: fee",
        fields={"fee_amount": Decimal("0.00000021"), "amount": Decimal("1E+3")},
    )
    as_json = run(redis_url, "status", "fee", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["feeAmount"] == "0.00000021"
    assert '"feeAmount": "0.00000021"' in as_json.stdout
    human = run(redis_url, "status", "fee")
    assert human.returncode == 0, human.stderr
    rows = [line.split() for line in human.stdout.splitlines() if line.strip()]
    lines = {row[0]: row[1:] for row in rows}
    assert lines["feeAmount"] == ["0.00000021"]
    assert lines["amount"] == ["1000"]
    assert "E-7" not in human.stdout and "E+3" not in human.stdout
    listed = run(redis_url, "list", "--json")
    assert [r["feeAmount"] for r in json.loads(listed.stdout)] == ["0.00000021"]
