"""Reading a batch of refund intents from a CSV or JSONL file, all or nothing, in bounded memory.

A batch is validated completely before anything reaches Redis: a merchant who uploads 10,000 lines
with three typos wants the three line numbers at once, not a half-submitted file and a retry loop.
Files come from Excel, from scripts and from other systems' exports, so the reader takes them as
those tools write them (UTF-8 with or without a BOM, CRLF, quoted cells spanning lines, blank lines)
and names what they get wrong (a cp1252 byte, an id Excel turned into ``9.91214E+15``, a JSON key
given twice) with the file's physical line number.

Two passes, so that a 200 MB file never sits in memory (issue 9 measured 1,561 MB for 210 MB when
the file was read whole):

1. :func:`scan_batch` reads the file line by line in binary, decodes each line on its own, validates
   every row and keeps only what the verdict needs: the problems (the first :data:`MAX_LISTED`,
   and a count of all), and per ``clientReference`` a 64-bit hash of the reference and of the
   content, with the line it was first seen on (to tell an identical repeat from a conflict).
2. :func:`iter_intents` reads the file again and yields each intent once, to be sent in chunks,
   and only when pass 1 found nothing wrong.

Lines are split on ``\\n`` only (in ``\\r\\n`` the ``\\r`` goes with the line end);
``str.splitlines`` would also split on U+2028, U+2029, ``\\x85`` or ``\\x0c`` inside a JSON
string and shift every line number after it. A stream that cannot be read twice (stdin) is first
copied to a temporary file with :func:`spool`.

The field names are the contract's (``originalTransactionType``, ``originalTransactionId``,
``clientReference``, ``refundAddress``), as JSONL keys or CSV headers, so a file reads like the API.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from refunds.errors import BatchError, FieldError, InvalidIntentError
from refunds.models import EXCEL_NUMBER, RefundIntent

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

BatchFormat = Literal["csv", "jsonl"]

REQUIRED_COLUMNS = ("originalTransactionType", "originalTransactionId", "clientReference")
OPTIONAL_COLUMNS = ("refundAddress",)
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
ID_FIELDS = ("originalTransactionId", "clientReference")

MAX_LISTED = 100  # problems (and duplicate lines) kept for display; all of them are counted
MAX_LINE_BYTES = 1 << 20  # a longer physical line is refused, so one line cannot fill memory

_EXTENSIONS: dict[str, BatchFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_BOM = b"\xef\xbb\xbf"

# What Excel writes for a long number in a General cell: a mantissa (with a decimal point or, in
# many locales, a comma) and an exponent with its sign ("9.91214E+15", "1E+15", "9,91214E+15").
# The sign is required, so an id such as "12e45" is not taken for one.
_EXCEL_NUMBER = EXCEL_NUMBER  # the model refuses it too; here the message says how to fix the file

# (physical line of the row, the row as a mapping, or the problems that stop this row)
_Row = tuple[int, dict[str, Any] | list[FieldError]]


@dataclass(frozen=True)
class Duplicate:
    """A row identical to an earlier one (same ``clientReference``, same content)."""

    line: int
    first_line: int
    client_reference: str


@dataclass
class BatchReport:
    """The verdict of :func:`scan_batch` (pass 1).

    ``problems`` holds the first :data:`MAX_LISTED` problems in file order and ``problem_count``
    counts all of them; ``duplicates`` likewise holds the first identical repeats and
    ``duplicate_count`` counts all. ``intents`` is the number of distinct intents pass 2 yields.
    """

    path: Path
    format: BatchFormat
    intents: int = 0
    rows: int = 0
    problems: list[FieldError] = field(default_factory=list)
    problem_count: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    duplicate_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: FieldError) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)

    def error(self) -> BatchError:
        """The problems as one exception (listing the first ones, counting all)."""
        return BatchError(self.problems, self.problem_count)


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


def scan_batch(path: Path | str, fmt: str | None = None) -> BatchReport:
    """Pass 1: validate every row of the file and report, without keeping the intents.

    Memory is bounded by the number of distinct references (two 64-bit hashes and a line number
    each), never by the file's size. Raises BatchError only when the format cannot be told;
    every problem of the content is in the report.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    report = BatchReport(path, kind)
    # hash(reference) -> (hash(content), first line). A 64-bit collision between two different
    # references (odds about n^2 / 2^65: 5e-8 for 1.4 million rows) would be misreported as a
    # repeat of the other one; the ledger still checks every reference exactly when submitting.
    seen = _Seen()
    conflicts: list[tuple[int, int, RefundIntent]] = []  # (line, first line, intent), listed ones
    for line, intent in _validated(path, kind, report):
        report.rows += 1
        key, content = _hash(intent.client_reference), _hash(intent.fingerprint())
        first = seen.get(key)
        if first is None:
            seen.add(key, content, line)
            report.intents += 1
        elif first[0] == content:
            report.duplicate_count += 1
            if len(report.duplicates) < MAX_LISTED:
                report.duplicates.append(Duplicate(line, first[1], intent.client_reference))
        else:
            placeholder = FieldError(
                "clientReference",
                f"{intent.client_reference!r} is also on line {first[1]} with different content",
                line,
            )
            if len(report.problems) < MAX_LISTED:
                conflicts.append((line, first[1], intent))
            report.add(placeholder)
    del seen
    if conflicts:
        _name_differences(path, kind, report, conflicts)
    if report.problem_count == 0 and report.intents == 0:
        report.add(FieldError("file", "contains no refund intents"))
    return report


def iter_intents(path: Path | str, fmt: str | None = None) -> Iterator[RefundIntent]:
    """Pass 2: each distinct intent of a file :func:`scan_batch` passed, in file order.

    Identical repeats are yielded once. Raises BatchError if the file has problems after all
    (it changed since pass 1); a caller sending chunks as they come may then have sent some.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    report = BatchReport(path, kind)
    sent = _Seen(values=False)
    for line, intent in _validated(path, kind, report):
        if report.problem_count:
            break
        key = _hash(intent.client_reference)
        if sent.get(key) is None:
            sent.add(key, 0, line)
            yield intent
    if report.problem_count:
        raise report.error()


def parse_batch(path: Path | str, fmt: str | None = None) -> list[RefundIntent]:
    """Every distinct intent of a (small) file; raise BatchError listing every problem.

    Both passes in one call, the intents in a list: for tests and small files. Large files go
    through :func:`scan_batch` and :func:`iter_intents` so that nothing holds them whole.
    """
    report = scan_batch(path, fmt)
    if not report.ok:
        raise report.error()
    return list(iter_intents(path, report.format))


# --- rows -----------------------------------------------------------------------------------------


def _hash(text: str) -> int:
    """64 bits of BLAKE2b, never 0 (0 marks a free slot of :class:`_Seen`)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") or 1


class _Seen:
    """Reference hash -> (content hash, first line), in flat arrays: 20 bytes a slot.

    A dict of Python ints and tuples costs about 200 bytes an entry, so 1.4 million rows (a 200 MB
    file) would hold some 280 MB; this open-addressing table (linear probing, at most 3/4 full)
    holds them in 42 MB. Keys are uniform hashes, so their low bits pick the slot. With
    ``values=False`` it is a set of keys (8 bytes a slot); :meth:`get` then answers (0, 0).
    """

    def __init__(self, capacity: int = 1 << 12, *, values: bool = True) -> None:
        self._values = values
        self._allocate(capacity)
        self._used = 0

    def _allocate(self, capacity: int) -> None:
        self._keys = array("Q", bytes(8 * capacity))
        self._contents = array("Q", bytes(8 * capacity if self._values else 0))
        self._lines = array("I", bytes(4 * capacity if self._values else 0))  # up to 2**32 - 1
        self._mask = capacity - 1

    def _slot(self, key: int) -> int:
        keys, mask = self._keys, self._mask
        i = key & mask
        while True:
            found = keys[i]
            if found in (0, key):
                return i
            i = (i + 1) & mask

    def get(self, key: int) -> tuple[int, int] | None:
        """(content hash, first line) for ``key``, or None."""
        i = self._slot(key)
        if self._keys[i] == 0:
            return None
        return (self._contents[i], self._lines[i]) if self._values else (0, 0)

    def add(self, key: int, content: int, line: int) -> None:
        """Record a key :meth:`get` did not find."""
        if (self._used + 1) * 4 > (self._mask + 1) * 3:
            self._grow()
        self._put(key, content, line)
        self._used += 1

    def _put(self, key: int, content: int, line: int) -> None:
        i = self._slot(key)
        self._keys[i] = key
        if self._values:
            self._contents[i], self._lines[i] = content, min(line, 2**32 - 1)

    def _grow(self) -> None:
        keys, contents, lines = self._keys, self._contents, self._lines
        self._allocate(2 * len(keys))
        if not self._values:
            for key in keys:
                if key:
                    self._put(key, 0, 0)
            return
        for key, content, line in zip(keys, contents, lines, strict=True):
            if key:
                self._put(key, content, line)


def _validated(
    path: Path, kind: BatchFormat, report: BatchReport
) -> Iterator[tuple[int, RefundIntent]]:
    """Valid intents with their line; every problem goes to ``report``."""
    # Fields whose absence the CSV header already reported once; not repeated on every row.
    missing: set[str] = set()
    with path.open("rb") as raw:
        lines = _lines(raw, report)
        rows = _jsonl_rows(lines) if kind == "jsonl" else _csv_rows(lines, report, missing)
        for line, row in rows:
            if isinstance(row, list):
                for problem in row:
                    report.add(problem)
                continue
            intent, problems = _intent(row, line)
            for problem in problems:
                if problem.field not in missing:
                    report.add(problem)
            if intent is not None:
                yield line, intent


def _intent(row: dict[str, Any], line: int) -> tuple[RefundIntent | None, list[FieldError]]:
    problems = [
        FieldError(
            name,
            f"{row[name]!r} looks like Excel scientific notation: Excel turned a long number "
            "into an approximation and the digits are lost. Format the column as Text in Excel "
            "(before typing or pasting the ids) and export the file again",
            line,
        )
        for name in ID_FIELDS
        if isinstance(row.get(name), str) and _EXCEL_NUMBER.fullmatch(row[name])
    ]
    try:
        intent = RefundIntent.parse(row, line=line)
    except InvalidIntentError as exc:
        flagged = {p.field for p in problems}
        return None, problems + [e for e in exc.errors if e.field not in flagged]
    return (None, problems) if problems else (intent, [])


def _lines(raw: IO[bytes], report: BatchReport) -> Iterator[tuple[int, str | None]]:
    """(line number, text with its line end) for each physical line; ``None`` when unreadable.

    Split on ``\\n`` only. A line that is not UTF-8 or longer than :data:`MAX_LINE_BYTES` is
    reported here, with its number.
    """
    number = 0
    while True:
        data = raw.readline(MAX_LINE_BYTES + 1)
        if not data:
            return
        number += 1
        if number == 1 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if len(data) > MAX_LINE_BYTES and not data.endswith(b"\n"):
            while data and not data.endswith(b"\n"):  # skip the rest of the line, in pieces
                data = raw.readline(MAX_LINE_BYTES)
            report.add(
                FieldError("line", f"longer than {MAX_LINE_BYTES} bytes; skipped", number)
            )
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


def _jsonl_rows(lines: Iterator[tuple[int, str | None]]) -> Iterator[_Row]:
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
    lines: Iterator[tuple[int, str | None]], report: BatchReport, missing: set[str]
) -> Iterator[_Row]:
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


def _check_header(
    header: list[str], line: int, report: BatchReport, missing: set[str]
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
            report.add(FieldError(name or "(empty)", "column appears twice", line))
        elif name not in KNOWN_COLUMNS:
            report.add(
                FieldError(name or "(empty)", f"unknown column (expected {expected})", line)
            )
            ignored.add(name)
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            missing.add(name)
            report.add(FieldError(name, "column is missing", line))
    return ignored


def _name_differences(
    path: Path,
    kind: BatchFormat,
    report: BatchReport,
    conflicts: list[tuple[int, int, RefundIntent]],
) -> None:
    """Replace "different content" with the fields that differ, for the listed conflicts.

    Pass 1 keeps only a hash of each first occurrence, so the first rows are read again; this
    happens only for a file that is refused anyway, and keeps at most :data:`MAX_LISTED` intents.
    """
    wanted = {first for _line, first, _intent in conflicts}
    firsts: dict[int, RefundIntent] = {}
    for line, intent in _validated(path, kind, BatchReport(path, kind)):
        if line in wanted:
            firsts[line] = intent
            if len(firsts) == len(wanted):
                break
    by_line = {line: (first, intent) for line, first, intent in conflicts}
    for i, problem in enumerate(report.problems):
        entry = by_line.get(problem.line or 0)
        if problem.field != "clientReference" or entry is None or entry[0] not in firsts:
            continue
        first, intent = entry
        report.problems[i] = FieldError(
            "clientReference",
            f"{intent.client_reference!r} is also on line {first} with different "
            f"{', '.join(_differences(firsts[first], intent))}",
            problem.line,
        )


def _differences(a: RefundIntent, b: RefundIntent) -> list[str]:
    ours, theirs = a.content(), b.content()
    return sorted(k for k in ours if ours[k] != theirs.get(k)) or ["content"]
