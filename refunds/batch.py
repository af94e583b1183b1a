"""Reading a batch of refund intents from a CSV or JSONL file, all or nothing.

A batch is validated completely before anything reaches Redis: a merchant who uploads 10,000 lines
with three typos wants the three line numbers at once, not a half-submitted file and a retry loop.
So :func:`parse_batch` collects every problem (bad field, malformed JSON, unknown column, a
``clientReference`` reused with other content) with the file's physical line number and raises one
:class:`~refunds.errors.InvalidIntentError` listing them all.

The field names are the contract's (``originalTransactionType``, ``originalTransactionId``,
``clientReference``, ``refundAddress``), as JSONL keys or CSV headers, so a file reads like the API.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from refunds.errors import FieldError, InvalidIntentError
from refunds.models import RefundIntent

BatchFormat = Literal["csv", "jsonl"]

REQUIRED_COLUMNS = ("originalTransactionType", "originalTransactionId", "clientReference")
OPTIONAL_COLUMNS = ("refundAddress",)
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

_EXTENSIONS: dict[str, BatchFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# (physical line of the row, the row as a mapping, or a FieldError that stops this row)
_Row = tuple[int, dict[str, Any] | FieldError]


def detect_format(path: Path, fmt: str | None = None) -> BatchFormat:
    """The batch format: ``fmt`` when given, else from the file's extension."""
    if fmt is not None:
        if fmt not in ("csv", "jsonl"):
            raise InvalidIntentError([FieldError("format", f"unknown format {fmt!r}")])
        return "csv" if fmt == "csv" else "jsonl"
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise InvalidIntentError(
            [
                FieldError(
                    "file",
                    f"cannot tell the format from {path.name!r}: name it .csv, .jsonl or "
                    ".ndjson, or pass --format csv|jsonl",
                )
            ]
        )
    return found


def parse_batch(path: Path | str, fmt: str | None = None) -> list[RefundIntent]:
    """Every intent of the file, validated; raise InvalidIntentError listing every problem.

    Identical repeats of an intent (same ``clientReference``, same content) are kept once, so a
    file that was concatenated twice is harmless; the same reference with other content is an
    error naming both lines.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = FieldError("file", f"is not UTF-8 text ({exc.reason})")
        raise InvalidIntentError([problem]) from None
    return parse_text(text, kind)


def parse_text(text: str, kind: BatchFormat) -> list[RefundIntent]:
    """Like :func:`parse_batch`, for text already read (tests, stdin)."""
    errors: list[FieldError] = []
    # Fields whose absence the CSV header already reported once; not repeated on every row.
    reported: set[str] = set()
    rows = _jsonl_rows(text) if kind == "jsonl" else _csv_rows(text, errors, reported)
    intents: list[RefundIntent] = []
    first_seen: dict[str, tuple[int, RefundIntent]] = {}
    for line, row in rows:
        if isinstance(row, FieldError):
            errors.append(row)
            continue
        try:
            intent = RefundIntent.parse(row, line=line)
        except InvalidIntentError as exc:
            errors.extend(e for e in exc.errors if e.field not in reported)
            continue
        seen = first_seen.get(intent.client_reference)
        if seen is None:
            first_seen[intent.client_reference] = (line, intent)
            intents.append(intent)
        elif seen[1].fingerprint() != intent.fingerprint():
            errors.append(
                FieldError(
                    "clientReference",
                    f"{intent.client_reference!r} is also on line {seen[0]} with different "
                    f"{', '.join(_differences(seen[1], intent))}",
                    line,
                )
            )
    if errors:
        raise InvalidIntentError(errors)
    if not intents:
        raise InvalidIntentError([FieldError("file", "contains no refund intents")])
    return intents


def _differences(a: RefundIntent, b: RefundIntent) -> list[str]:
    ours, theirs = a.content(), b.content()
    return sorted(k for k in ours if ours[k] != theirs.get(k)) or ["content"]


def _jsonl_rows(text: str) -> Iterator[_Row]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue  # blank lines (a trailing newline, spacing) carry no intent
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield (
                number,
                FieldError("line", f"not valid JSON: {exc.msg} (column {exc.colno})", number),
            )
            continue
        if not isinstance(data, dict):
            yield number, FieldError("line", "must be a JSON object", number)
            continue
        yield number, data


def _csv_rows(text: str, errors: list[FieldError], missing: set[str]) -> Iterator[_Row]:
    """Rows of a CSV file with a header line; header problems go to ``errors``.

    Required columns absent from the header are added to ``missing`` before the first row.

    A row's line number is the physical line it starts on (a quoted cell may span lines), so the
    number matches what an editor shows. Empty cells are absent fields.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    ignored: set[str] = set()
    previous_end = 0
    try:
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header, header_line = [cell.strip() for cell in row], start
                ignored = _check_header(header, header_line, errors, missing)
                continue
            if len(row) != len(header):
                yield (
                    start,
                    FieldError(
                        "line",
                        f"has {len(row)} cells, the header (line {header_line}) has {len(header)}",
                        start,
                    ),
                )
                continue
            data = {
                name: cell
                for name, cell in zip(header, row, strict=True)
                if name not in ignored and cell.strip()
            }
            yield start, data
    except csv.Error as exc:
        yield previous_end + 1, FieldError("line", f"not valid CSV: {exc}", previous_end + 1)


def _check_header(
    header: list[str], line: int, errors: list[FieldError], missing: set[str]
) -> set[str]:
    """Report unknown, repeated and missing columns; return the columns to skip in rows.

    Rows are still validated after a header error, but without the noise the header already
    explains: unknown columns are skipped, and a missing column is not reported on every row.
    """
    ignored: set[str] = set()
    seen: set[str] = set()
    expected = ", ".join(KNOWN_COLUMNS)
    for name in header:
        if name in seen:
            errors.append(FieldError(name or "(empty)", "column appears twice", line))
        elif name not in KNOWN_COLUMNS:
            errors.append(
                FieldError(name or "(empty)", f"unknown column (expected {expected})", line)
            )
            ignored.add(name)
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            missing.add(name)
            errors.append(FieldError(name, "column is missing", line))
    return ignored
