"""Validating a batch file, all or nothing, before anything reaches Redis (pass 1).

A merchant who uploads 10,000 lines with three typos wants the three line numbers at once, not a
half-submitted file and a retry loop. :func:`scan_batch` reads the file once, line by line,
validates every row and keeps only what the verdict needs: the problems (the first
:data:`MAX_LISTED`, and a count of all), per ``clientReference`` the hash of its first content and
its line (in a :class:`~refunds.batch.references.ReferenceTable` on disk, so memory stays flat as
the file grows), and the file's :class:`FileStamp`, which pass 2 (``refunds.batch.submit``) checks
so that what it sends is the file that was validated. Names what Excel did to an id
(``9.91214E+15``) and how to fix it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refunds.batch.read import BatchFormat, Digest, detect_format, rows
from refunds.batch.references import ReferenceTable, text_hash
from refunds.errors import BatchError, FieldError, InvalidIntentError
from refunds.models import EXCEL_NUMBER, RefundIntent

ID_FIELDS = ("originalTransactionId", "clientReference")

MAX_LISTED = 100  # problems (and duplicate lines) kept for display; all of them are counted

# What Excel writes for a long number in a General cell: a mantissa (with a decimal point or, in
# many locales, a comma) and an exponent with its sign ("9.91214E+15", "1E+15", "9,91214E+15").
# The sign is required, so an id such as "12e45" is not taken for one.
_EXCEL_NUMBER = EXCEL_NUMBER  # the model refuses it too; here the message says how to fix the file


@dataclass(frozen=True)
class FileStamp:
    """Which file pass 1 validated: its size and modification time (nanoseconds) when it was
    opened, and the BLAKE2b digest of every byte read."""

    size: int
    mtime_ns: int
    digest: str

    @staticmethod
    def of(path: Path) -> tuple[int, int]:
        """(size, mtime_ns) of ``path`` now."""
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns


def file_digest() -> Any:
    """The digest every byte of a pass goes through (pass 1's and pass 2's must be the same)."""
    return hashlib.blake2b(digest_size=16)


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
    ``duplicate_count`` counts all. ``intents`` is the number of distinct intents pass 2 yields;
    ``stamp`` is the file as pass 1 read it (pass 2 refuses another).
    """

    path: Path
    format: BatchFormat
    intents: int = 0
    rows: int = 0
    problems: list[FieldError] = field(default_factory=list)
    problem_count: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    duplicate_count: int = 0
    stamp: FileStamp | None = None  # the file as validated (None: not read)

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


def scan_batch(path: Path | str, fmt: str | None = None) -> BatchReport:
    """Pass 1: validate every row of the file and report, without keeping the intents.

    Memory is bounded: the references seen go to a temporary SQLite table on disk, the problems
    listed are capped. Raises BatchError only when the format cannot be told; every problem of
    the content is in the report, a file that changed while it was read included.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    report = BatchReport(path, kind)
    conflicts: list[tuple[int, int, RefundIntent]] = []  # (line, first line, intent), listed ones
    size, mtime_ns = FileStamp.of(path)
    digest = file_digest()
    with ReferenceTable() as seen:
        for line, intent in validated(path, kind, report, digest):
            report.rows += 1
            key, content = text_hash(intent.client_reference), text_hash(intent.fingerprint())
            first = seen.first(key, content, line)
            if first is None:
                report.intents += 1
                continue
            _repeated(report, conflicts, intent, line=line, content=content, first=first)
    report.stamp = FileStamp(size, mtime_ns, digest.hexdigest())
    if FileStamp.of(path) != (size, mtime_ns):
        report.add(FieldError("file", "changed while it was being validated; run it again"))
    if conflicts:
        name_differences(path, kind, report, conflicts)
    if report.problem_count == 0 and report.intents == 0:
        report.add(FieldError("file", "contains no refund intents"))
    return report


def _repeated(
    report: BatchReport,
    conflicts: list[tuple[int, int, RefundIntent]],
    intent: RefundIntent,
    *,
    line: int,
    content: int,
    first: tuple[int, int],
) -> None:
    """A reference seen before (``first``: its content hash and line): an identical repeat, or a
    conflict (listed for :func:`name_differences` while the listing has room)."""
    if first[0] == content:
        report.duplicate_count += 1
        if len(report.duplicates) < MAX_LISTED:
            report.duplicates.append(Duplicate(line, first[1], intent.client_reference))
        return
    if len(report.problems) < MAX_LISTED:
        conflicts.append((line, first[1], intent))
    report.add(
        FieldError(
            "clientReference",
            f"{intent.client_reference!r} is also on line {first[1]} with different content",
            line,
        )
    )


def validated(
    path: Path, kind: BatchFormat, report: BatchReport, digest: Digest | None = None
) -> Iterator[tuple[int, RefundIntent]]:
    """Valid intents with their line; every problem goes to ``report``, every byte read to
    ``digest``."""
    # Fields whose absence the CSV header already reported once; not repeated on every row.
    missing: set[str] = set()
    with path.open("rb") as raw:
        for line, row in rows(raw, kind, report, missing, digest):
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


def name_differences(
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
    for line, intent in validated(path, kind, BatchReport(path, kind)):
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
