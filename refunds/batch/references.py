"""The table of references a batch has shown so far, spilled to SQLite in a temporary file.

De-duplication needs, per ``clientReference``, a hash of the first occurrence's content and its
line (to tell an identical repeat from a conflict, and to name the line). Kept in memory, that
table grows with the file (a hand-written open-addressing table took 42 MB for 1.4 million rows,
and peak RSS went from 67 MB for a 52 MB file to 110 MB for 211 MB). Here it lives in a
``sqlite3`` database in a temporary directory, so the process holds only SQLite's page cache
(:data:`CACHE_KIB`), however large the file. One transaction, no journal, no fsync: the database
is scratch, deleted on :meth:`ReferenceTable.close` (or when the object is collected).

Keys and contents are 64-bit BLAKE2b hashes, stored as SQLite's signed integers. A collision
between two different references (odds about n^2 / 2^65: 5e-8 for 1.4 million rows) would be
misreported as a repeat of the other one; the ledger still checks every reference exactly when
submitting.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from pathlib import Path
from types import TracebackType

#: SQLite's page cache, the table's whole share of memory (KiB).
CACHE_KIB = 8 * 1024


def text_hash(text: str) -> int:
    """64 bits of BLAKE2b of ``text`` as a signed integer (SQLite's INTEGER)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class ReferenceTable:
    """Reference hash -> (content hash, first line), in a temporary SQLite database.

    ``directory``: where the temporary database goes (None: the system's temporary directory).
    """

    def __init__(self, directory: Path | str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="refunds-batch-", dir=directory)
        self._db = sqlite3.connect(Path(self._dir.name) / "references.sqlite3")
        for pragma in (
            "journal_mode = OFF",
            "synchronous = OFF",
            "locking_mode = EXCLUSIVE",
            "temp_store = FILE",
            "mmap_size = 0",
            f"cache_size = -{CACHE_KIB}",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE refs (key INTEGER PRIMARY KEY, content INTEGER NOT NULL, line INTEGER)"
        )

    def first(self, key: int, content: int, line: int) -> tuple[int, int] | None:
        """Record ``key`` first seen on ``line`` with ``content``; None when it is new, else the
        (content, line) it was first seen with (that record is kept)."""
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO refs (key, content, line) VALUES (?, ?, ?)", (key, content, line)
        )
        if inserted.rowcount == 1:
            return None
        row = self._db.execute("SELECT content, line FROM refs WHERE key = ?", (key,)).fetchone()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        """Drop the database (idempotent)."""
        self._db.close()
        self._dir.cleanup()

    def __enter__(self) -> ReferenceTable:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
