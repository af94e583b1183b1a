"""The archiver's task: beat sends ``archive.drain`` every ``REFUNDS_ARCHIVE_INTERVAL``.

Thin: one archive round (``refunds.archive.service``): drain the Redis queue into SQL, then evict
what is past hot retention. A lock in Redis keeps one round at a time; a lost or doubled message
is harmless (the next round finds the same queue).
"""

from __future__ import annotations

from refunds.archive.service import archive_round
from refunds.context import current_context
from worker.app import app


@app.task(name="archive.drain", acks_late=False, ignore_result=True, send_events=False)
def drain() -> int:
    """Archive what is queued; returns the entries archived."""
    p = current_context()
    return archive_round(p.ledger.redis, p.settings).archived
