"""Reading a batch of refund intents from a CSV or JSONL file, all or nothing, in bounded memory.

Two passes, so that a 200 MB file never sits in memory:

1. :func:`scan_batch` (``validate``) reads the file line by line (``read``), validates every row
   and keeps only what the verdict needs, its reference table spilled to SQLite on disk
   (``references``);
2. :func:`iter_intents` (``submit``) reads the file again and yields each intent once, to be sent
   in chunks, only when pass 1 found nothing wrong and the file is still the one it validated.
"""

from refunds.batch.read import (
    KNOWN_COLUMNS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    BatchFormat,
    DuplicateKeyError,
    detect_format,
    spool,
    unique_keys,
)
from refunds.batch.submit import iter_intents, parse_batch
from refunds.batch.validate import (
    ID_FIELDS,
    MAX_LISTED,
    BatchReport,
    Duplicate,
    FileStamp,
    scan_batch,
)

__all__ = [
    "ID_FIELDS",
    "KNOWN_COLUMNS",
    "MAX_LISTED",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "BatchFormat",
    "BatchReport",
    "Duplicate",
    "DuplicateKeyError",
    "FileStamp",
    "detect_format",
    "iter_intents",
    "parse_batch",
    "scan_batch",
    "spool",
    "unique_keys",
]
