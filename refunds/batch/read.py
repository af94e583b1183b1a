"""Reading a batch file: its format, its physical lines, and the rows they hold.

Files come from Excel, from scripts and from other systems' exports, so the reader takes them as
those tools write them (UTF-8 with or without a BOM, CRLF, quoted cells spanning lines, blank lines)
and names what they get wrong (a cp1252 byte, a JSON key given twice, a row with too many cells)
with the file's physical line number.

Lines are split on ``\\n`` only (in ``\\r\\n`` the ``\\r`` goes with the line end);
``str.splitlines`` would also split on U+2028, U+2029, ``\\x85`` or ``\\x0c`` inside a JSON
string and shift every line number after it. The file is read line by line in binary, never
whole; a stream that cannot be read twice (stdin) is first copied to a temporary file with
:func:`spool`. Every byte read can go through a digest (``hashlib``), so a second pass can tell
that the file is still the one the first pass validated.

The field names are the contract's (``originalTransactionType``, ``originalTransactionId``,
``clientReference``, ``refundAddress``), as JSONL keys or CSV headers, so a file reads like the API.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from refunds.errors import BatchError, FieldError

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

BatchFormat = Literal["csv", "jsonl"]

REQUIRED_COLUMNS = ("originalTransactionType", "originalTransactionId", "clientReference")
OPTIONAL_COLUMNS = ("refundAddress", "participantCode")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

MAX_LINE_BYTES = 1 << 20  # a longer physical line is refused, so one line cannot fill memory

_EXTENSIONS: dict[str, BatchFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_BOM = b"\xef\xbb\xbf"

# (physical line of the row, the row as a mapping, or the problems that stop this row)
Row = tuple[int, dict[str, Any] | list[FieldError]]


class Problems(Protocol):
    """Where the reader reports what it cannot read (a ``BatchReport``)."""

    def add(self, problem: FieldError) -> None: ...


class Digest(Protocol):
    """What the reader feeds every byte it reads to (a ``hashlib`` object)."""

    def update(self, data: bytes, /) -> None: ...


def detect_format(path: Path, fmt: str | None = None) -> BatchFormat:
    """The batch format: ``fmt`` when given, else from the file's extension."""
    if fmt is not None:
        if fmt not in ("csv", "jsonl"):
            raise BatchError([FieldError("format", f"unknown format {fmt!r}")])
        return "csv" if fmt == "csv" else "jsonl"
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        name = "standard input" if str(path) == "-" else repr(path.name)
        raise BatchError(
            [
                FieldError(
                    "file",
                    f"cannot tell the format from {name}: name it .csv, .jsonl or "
                    ".ndjson, or pass --format csv|jsonl",
                )
            ]
        )
    return found


def spool(stream: IO[bytes], directory: Path | str | None = None) -> Path:
    """Copy a one-pass stream (stdin) to a temporary file, in chunks; the caller deletes it."""
    with tempfile.NamedTemporaryFile(
        "wb", prefix="refunds-batch-", delete=False, dir=directory
    ) as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    return Path(out.name)


def rows(
    raw: IO[bytes],
    kind: BatchFormat,
    report: Problems,
    missing: set[str],
    digest: Digest | None = None,
) -> Iterator[Row]:
    """The rows of the open file ``raw``; unreadable lines and header problems go to ``report``,
    required columns absent from a CSV header to ``missing``, every byte read to ``digest``."""
    lines = _lines(raw, report, digest)
    return _jsonl_rows(lines) if kind == "jsonl" else _csv_rows(lines, report, missing)


def _lines(
    raw: IO[bytes], report: Problems, digest: Digest | None = None
) -> Iterator[tuple[int, str | None]]:
    """(line number, text with its line end) for each physical line; ``None`` when unreadable.

    Split on ``\\n`` only. A line that is not UTF-8 or longer than :data:`MAX_LINE_BYTES` is
    reported here, with its number.
    """
    number = 0
    while True:
        data = raw.readline(MAX_LINE_BYTES + 1)
        if not data:
            return
        if digest is not None:
            digest.update(data)
        number += 1
        if number == 1 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if len(data) > MAX_LINE_BYTES and not data.endswith(b"\n"):
            while data and not data.endswith(b"\n"):  # skip the rest of the line, in pieces
                data = raw.readline(MAX_LINE_BYTES)
                if digest is not None:
                    digest.update(data)
            report.add(FieldError("line", f"longer than {MAX_LINE_BYTES} bytes; skipped", number))
            yield number, None
            continue
        try:
            yield number, data.decode("utf-8")
        except UnicodeDecodeError as exc:
            column = len(data[: exc.start].decode("utf-8", errors="replace")) + 1
            report.add(
                FieldError(
                    "line",
                    f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
                    "save the file as UTF-8 (in Excel: CSV UTF-8)",
                    number,
                )
            )
            yield number, None


def _jsonl_rows(lines: Iterator[tuple[int, str | None]]) -> Iterator[Row]:
    for number, text in lines:
        if text is None or not text.strip():
            continue  # unreadable (already reported) or blank: a trailing newline, spacing
        try:
            data = json.loads(text, object_pairs_hook=unique_keys)
        except DuplicateKeyError as exc:
            yield number, [FieldError(exc.key, "appears twice in the object", number)]
            continue
        except json.JSONDecodeError as exc:
            yield (
                number,
                [FieldError("line", f"not valid JSON: {exc.msg} (column {exc.colno})", number)],
            )
            continue
        if not isinstance(data, dict):
            yield number, [FieldError("line", "must be a JSON object", number)]
            continue
        yield number, data


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` keeps the last of repeated keys; a file that says two things is refused."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(key)
        out[key] = value
    return out


def _csv_rows(
    lines: Iterator[tuple[int, str | None]], report: Problems, missing: set[str]
) -> Iterator[Row]:
    """Rows of a CSV file with a header line; header problems go to ``report``.

    Required columns absent from the header are added to ``missing`` before the first row.

    A row's line number is the physical line it starts on (a quoted cell may span lines), so the
    number matches what an editor shows. Empty cells are absent fields. A row touching a line
    that could not be decoded is skipped (that line is already reported).
    """
    unreadable = _UnreadableLines(lines)
    header: list[str] | None = None
    header_line = 0
    ignored: set[str] = set()
    for start, row in _csv_records(csv.reader(unreadable.texts())):
        if isinstance(row, csv.Error):
            yield start, [FieldError("line", f"not valid CSV: {row}", start)]
            continue
        if unreadable.last >= start:
            if header is None:
                return  # without the header no row can be read; its line is reported
            continue
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header, header_line = [cell.strip() for cell in row], start
            ignored = _check_header(header, header_line, report, missing)
            continue
        yield start, _csv_fields(row, header, header_line, ignored, start)


class _UnreadableLines:
    """Feeds decoded lines to ``csv.reader`` and remembers the last one that could not be
    decoded, so the caller can skip a row that touches it (the line is already reported)."""

    def __init__(self, lines: Iterator[tuple[int, str | None]]) -> None:
        self._lines = lines
        self.last = 0  # the number of the last line that could not be decoded; 0: none yet

    def texts(self) -> Iterator[str]:
        for number, text in self._lines:
            if text is None:
                self.last = number
            # An empty line in place of an unreadable one keeps the reader's count in step.
            yield "\n" if text is None else text


def _csv_records(reader: CsvReader) -> Iterator[tuple[int, list[str] | csv.Error]]:
    """``(first physical line, cells or the reader's error)`` for each record of ``reader``.

    ``csv.reader`` only tells the line a record ends on; the next record starts one after the
    previous end, which is what an editor shows. A malformed record is handed on as its
    ``csv.Error`` so the caller reports it and reading goes on.
    """
    previous_end = 0
    while True:
        row: list[str] | csv.Error
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row = exc
        start, previous_end = previous_end + 1, reader.line_num
        yield start, row


def _csv_fields(
    row: list[str], header: list[str], header_line: int, ignored: set[str], start: int
) -> dict[str, Any] | list[FieldError]:
    """One CSV record as fields named by the header: empty cells and ignored columns left out.

    A record with another number of cells than the header cannot be matched to columns, so it
    is one error rather than guessed fields.
    """
    if len(row) != len(header):
        return [
            FieldError(
                "line",
                f"has {len(row)} cells, the header (line {header_line}) has {len(header)}",
                start,
            )
        ]
    return {
        name: cell
        for name, cell in zip(header, row, strict=True)
        if name not in ignored and cell.strip()
    }


def _check_header(header: list[str], line: int, report: Problems, missing: set[str]) -> set[str]:
    """Report unknown, repeated and missing columns; return the columns to skip in rows.

    Rows are still validated after a header error, but without the noise the header already
    explains: unknown columns are skipped, and a missing column is not reported on every row.
    """
    ignored: set[str] = set()
    seen: set[str] = set()
    expected = ", ".join(KNOWN_COLUMNS)
    for name in header:
        if name in seen:
            report.add(FieldError(name or "(empty)", "column appears twice", line))
        elif name not in KNOWN_COLUMNS:
            report.add(FieldError(name or "(empty)", f"unknown column (expected {expected})", line))
            ignored.add(name)
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            missing.add(name)
            report.add(FieldError(name, "column is missing", line))
    return ignored
