"""Pass 2: the intents of a validated batch file, each once, in file order, to be sent in chunks.

The file is read a second time (a 200 MB file never sits in memory: issue 9 measured 1,561 MB
for 210 MB when it was read whole), so it may have changed since pass 1 validated it: an export
job rewriting it, a merchant saving over it. Given pass 1's :class:`FileStamp`, pass 2 refuses a
file whose size or modification time differs before it yields anything, and checks the digest
of every byte it read at the end; a file that changed while it was sent is refused then (what
was yielded before was each a valid intent, which the ledger checks against its reference
again). Identical repeats are yielded once, remembered in a
:class:`~refunds.batch.references.ReferenceTable` on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from refunds.batch.read import detect_format
from refunds.batch.references import ReferenceTable, text_hash
from refunds.batch.validate import BatchReport, FileStamp, file_digest, scan_batch, validated
from refunds.errors import BatchError, FieldError
from refunds.models import RefundIntent


def iter_intents(
    path: Path | str, fmt: str | None = None, *, expect: FileStamp | None = None
) -> Iterator[RefundIntent]:
    """Each distinct intent of a file :func:`scan_batch` passed, in file order.

    ``expect``: the report's ``stamp``; the file must still be that one (BatchError otherwise:
    before the first intent when its size or modification time changed, after the last one when
    only its bytes did). Raises BatchError also if the file has problems after all; a caller
    sending chunks as they come may then have sent some.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    if expect is not None and FileStamp.of(path) != (expect.size, expect.mtime_ns):
        raise _changed("changed since it was validated; nothing was submitted from it")
    report = BatchReport(path, kind)
    digest = file_digest()
    with ReferenceTable() as sent:
        for line, intent in validated(path, kind, report, digest):
            if report.problem_count:
                break
            if sent.first(text_hash(intent.client_reference), 0, line) is None:
                yield intent
    if report.problem_count:
        raise report.error()
    if expect is not None and digest.hexdigest() != expect.digest:
        raise _changed(
            "changed while it was being submitted; the intents sent were each valid, but may "
            "not be the file that was validated: check them with refunds status"
        )


def _changed(why: str) -> BatchError:
    return BatchError([FieldError("file", why)])


def parse_batch(path: Path | str, fmt: str | None = None) -> list[RefundIntent]:
    """Every distinct intent of a (small) file; raise BatchError listing every problem.

    Both passes in one call, the intents in a list: for tests and small files. Large files go
    through :func:`scan_batch` and :func:`iter_intents` so that nothing holds them whole.
    """
    report = scan_batch(path, fmt)
    if not report.ok:
        raise report.error()
    return list(iter_intents(path, report.format, expect=report.stamp))
