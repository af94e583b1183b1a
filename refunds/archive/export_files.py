"""Writing a finance export: CSV, XLSX or Parquet, each with a manifest (``{file}.manifest.json``).

- CSV: amounts as exact decimal strings; a text cell a spreadsheet would run as a formula
  (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) is neutralised with a leading ``'``.
- XLSX (openpyxl, write-only: rows stream to disk): an amount is a number when a spreadsheet
  number (an IEEE double, 15 significant digits) holds it exactly, else its exact text; text
  cells neutralised as in CSV. A second sheet holds the period summary (exact decimal text).
- Parquet (pyarrow): amounts as ``decimal128(38, 18)``, text raw; written in row groups.

The manifest carries the schema version, the period, the rows, the sums per currency and state,
the period summary and the file's sha256, so finance can tie the file out.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from refunds.archive.export_rows import (
    AMOUNT_COLUMNS,
    COLUMNS,
    EXPORT_SCHEMA,
    TEXT_COLUMNS,
    Period,
    Row,
    Totals,
)
from refunds.models import iso, now
from refunds.money import format_money

__all__ = ["FORMATS", "Format", "write_export"]

Format = Literal["csv", "xlsx", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "xlsx", "parquet")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_GROUP = 10_000  # Parquet rows per row group (bounded memory)


def neutralise(text: str) -> str:
    """A cell a spreadsheet would evaluate, made inert text."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _cell_text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in AMOUNT_COLUMNS:
        return format_money(value) or ""
    text = str(value)
    return neutralise(text) if name in TEXT_COLUMNS else text


def _write_csv(path: Path, rows: Iterable[Row], totals: Totals) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for row in rows:
            totals.add(row)
            out.writerow([_cell_text(c, row[c]) for c in COLUMNS])


def _spreadsheet_number(value: Decimal) -> float | None:
    """``value`` as a float if a spreadsheet shows exactly it (<= 15 significant digits and the
    double round-trips); None: write it as text."""
    digits = len(value.normalize().as_tuple().digits)
    as_float = float(value)
    if digits <= 15 and Decimal(repr(as_float)) == value:
        return as_float
    return None


def _xlsx_cell(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in AMOUNT_COLUMNS:
        number = _spreadsheet_number(value)
        return number if number is not None else format_money(value)
    return neutralise(str(value)) if name in TEXT_COLUMNS else value


def _write_xlsx(path: Path, rows: Iterable[Row], totals: Totals) -> None:
    from openpyxl import Workbook  # noqa: PLC0415 - only the xlsx export needs it

    book = Workbook(write_only=True)
    sheet = book.create_sheet("refunds")
    sheet.append(list(COLUMNS))
    for row in rows:
        totals.add(row)
        sheet.append([_xlsx_cell(c, row[c]) for c in COLUMNS])
    summary = book.create_sheet("summary")
    summary.append(["currency", "state", "rows", "amount"])
    for s in totals.sums():
        summary.append([neutralise(s["currency"]), s["state"], s["rows"], s["amount"]])
    book.save(path)


def _write_parquet(path: Path, rows: Iterable[Row], totals: Totals) -> None:
    import pyarrow as pa  # noqa: PLC0415 - only the parquet export needs it
    import pyarrow.parquet as pq  # noqa: PLC0415

    money = pa.decimal128(38, 18)
    ints = {"original_transaction_type", "provider_status"}
    schema = pa.schema(
        [
            (c, money if c in AMOUNT_COLUMNS else pa.int64() if c in ints else pa.string())
            for c in COLUMNS
        ],
        metadata={"schema": EXPORT_SCHEMA},
    )
    with pq.ParquetWriter(path, schema) as writer:
        group: list[Row] = []
        for row in rows:
            totals.add(row)
            group.append(row)
            if len(group) >= _GROUP:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group = []
        if group or totals.rows == 0:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))


_WRITERS = {"csv": _write_csv, "xlsx": _write_xlsx, "parquet": _write_parquet}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_export(path: Path, fmt: Format, rows: Iterable[Row], period: Period) -> dict[str, Any]:
    """Write ``rows`` to ``path`` in ``fmt`` and its manifest beside it; returns the manifest."""
    totals = Totals()
    _WRITERS[fmt](path, rows, totals)
    manifest = {
        "schema": EXPORT_SCHEMA,
        "columns": list(COLUMNS),
        "format": fmt,
        "file": path.name,
        "sha256": _sha256(path),
        "generatedAt": iso(now()),
        "period": period.to_public(),
        "rows": totals.rows,
        "sums": totals.sums(),
        "summary": totals.summary(),
    }
    manifest_path = path.with_name(path.name + ".manifest.json")
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
