"""``refunds export`` from a real archive (an SQLite file and a PostgreSQL database): each format
matches its manifest, amounts round-trip exactly, formula-looking text opens as text."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from openpyxl import load_workbook
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from devstack.processes import free_port, start_web
from devstack.wait import wait_until
from refunds.archive.archiver import Batch, write
from refunds.archive.db import engine_for, upgrade
from refunds.store.archive_queue import Entry

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TINY = "0.000000000000000001"
BIG = "123456789.123456789012345678"
FORMULA = '=HYPERLINK("http://evil.example","x")'
KEY = {"X-API-Key": "sandbox-api-key"}
OPERATOR = {"X-API-Key": "sandbox-operator-key"}
T0 = 1_780_000_000.0  # 2026-05-28, inside the exported period


def _entry(n: int, ref: str, state: str, amount: str, addr: str, *, cur: str = "USDT") -> Entry:
    created = T0 + n
    lines = [
        {"at": created, "from": None, "to": "received", "reason": "submitted"},
        {"at": created + 1, "from": "confirming", "to": "processing", "reason": "confirmed"},
        {"at": created + 2, "from": "processing", "to": state, "reason": "provider final"},
    ]
    rec = {
        "state": state, "type": "1", "txn": f"tx-{n}", "fp": "f" * 64, "created": repr(created),
        "updated": repr(created + 2), "ver": "3", "amount": amount, "cur": cur,
        "chain": "TRX", "fee": "1.5", "feecur": cur, "addr": addr, "rid": f"rid-{n}",
        "hash": "0xabc", "pstatus": "2", "apby": "ann",
    }  # fmt: skip
    return Entry(
        f"{1000 + n}-0",
        {
            "k": "r",
            "ref": ref,
            "v": "3",
            "h": "\n".join(json.dumps(line) for line in lines),
            "r": json.dumps(rec),
        },
    )


@contextlib.contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'export.db'}"
        return
    try:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            name = f"refunds_export_{uuid.uuid4().hex[:8]}"
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        engine_for.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_every_format_matches_its_manifest_with_exact_amounts_and_inert_formulas(
    kind: str, tmp_path: Path
) -> None:
    with _database(kind, tmp_path) as url:
        upgrade(url)
        entries = [
            _entry(1, "exp-tiny", "completed", TINY, "TQn9Y2khEsLJW1ChVWFMSMeRDow5KcbLSE"),
            _entry(2, FORMULA, "completed", BIG, FORMULA),
            _entry(3, "exp-failed", "failed", "10.25", "-1+1"),
            _entry(4, "exp-usdc", "completed", "2", "@SUM(A1)", cur="USDC"),
        ]
        with engine_for(url).begin() as conn:
            write(conn, Batch.of(entries))
        env = {**os.environ, "REFUNDS_PROFILE": "sandbox", "REFUNDS_DATABASE_URL": url}
        for fmt in ("csv", "xlsx", "parquet"):
            out = tmp_path / f"export.{fmt}"
            done = subprocess.run(
                [sys.executable, "-m", "refunds.cli", "export", "--from", "2026-05-01",
                 "--to", "2026-06-01", "--format", fmt, "--out", str(out)],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            manifest = json.loads((tmp_path / f"export.{fmt}.manifest.json").read_text())
            assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
            assert manifest["rows"] == 4
            sums = {(s["currency"], s["state"]): s["amount"] for s in manifest["sums"]}
            assert sums[("USDT", "completed")] == str(Decimal(TINY) + Decimal(BIG))
            assert sums[("USDT", "failed")] == "10.25"
            rows = _read(fmt, out)
            assert len(rows) == 4
            by_txn = {r["original_transaction_id"]: r for r in rows}
            assert Decimal(str(by_txn["tx-1"]["amount"])) == Decimal(TINY)
            assert Decimal(str(by_txn["tx-2"]["amount"])) == Decimal(BIG)
            assert by_txn["tx-2"]["confirmed_at"] is not None
            if fmt == "parquet":  # raw
                assert by_txn["tx-2"]["client_reference"] == FORMULA
                assert by_txn["tx-2"]["refund_address"] == FORMULA
            else:  # a spreadsheet shows text, never runs it
                assert by_txn["tx-2"]["client_reference"] == "'" + FORMULA
                assert by_txn["tx-2"]["refund_address"] == "'" + FORMULA
                assert by_txn["tx-3"]["refund_address"] == "'-1+1"
                assert by_txn["tx-4"]["refund_address"] == "'@SUM(A1)"
            if fmt == "xlsx":  # more than 15 significant digits stay exact text
                assert isinstance(by_txn["tx-2"]["amount"], str)
                assert isinstance(by_txn["tx-3"]["amount"], float)


def _read(fmt: str, path: Path) -> list[dict[str, object]]:
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return [{k: (v or None) for k, v in r.items()} for r in csv.DictReader(f)]
    if fmt == "xlsx":
        sheet = load_workbook(path, read_only=True)["refunds"]
        values = list(sheet.iter_rows(values_only=True))
        head = [str(h) for h in values[0]]
        # read-only sheets drop trailing empty cells: pad them back
        pad = len(head)
        return [dict(zip(head, [*r, *[None] * (pad - len(r))], strict=True)) for r in values[1:]]
    table = pq.read_table(path)
    assert str(table.schema.field("amount").type) == "decimal128(38, 18)"
    return list(table.to_pylist())


def test_export_over_http_needs_an_operator_key_and_matches_its_manifest(
    tmp_path: Path, redis_url: str
) -> None:
    url = f"sqlite:///{tmp_path / 'http-export.db'}"
    upgrade(url)
    with engine_for(url).begin() as conn:
        write(conn, Batch.of([_entry(1, "http-big", "completed", BIG, "addr-1")]))
    port = free_port()
    env = {
        **os.environ,
        "REFUNDS_PROFILE": "sandbox",
        "REFUNDS_DATABASE_URL": url,
        "REDIS_URL": redis_url,
    }
    web = start_web(tmp_path, env, port=port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(base + "/healthz", timeout=2).ok, 60, what="web", child=web)
        params = {"from": "2026-05-01T00:00:00Z", "to": "2026-06-01T00:00:00Z", "format": "csv"}
        refused = requests.get(base + "/exports/refunds", params=params, timeout=10, headers=KEY)
        assert refused.status_code == 403
        got = requests.get(base + "/exports/refunds", params=params, timeout=30, headers=OPERATOR)
        assert got.status_code == 200, got.text
        assert got.headers["X-Export-Rows"] == "1"
        assert got.headers["X-Export-Sha256"] == hashlib.sha256(got.content).hexdigest()
        assert BIG in got.text
        manifest = requests.get(
            base + "/exports/refunds",
            params={**params, "manifest": "true"},
            timeout=30,
            headers=OPERATOR,
        ).json()
        assert manifest["rows"] == 1
        assert manifest["sums"][0]["amount"] == BIG
    finally:
        web.stop()
