"""What a step answers its task: a note, the record as written, and the next step to nudge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refunds.decisions import NextTask
from refunds.models import RefundRecord


@dataclass(frozen=True)
class StepResult:
    note: str
    record: RefundRecord | None = None
    next_task: NextTask | None = None
    outcome: str = "applied"  # of provider news: applied | stale | mismatch | anomaly | conflict
    fence: int | None = None  # the dispatch id ``next_task``'s message must carry (None: unfenced)
    inline: bool = False  # ``next_task`` was begun in the same write and runs in this task
    parked: bool | None = None  # webhooks wait for the refund (None: not known, look)


def log_extra(record: RefundRecord, **more: Any) -> dict[str, Any]:
    """The structured log fields of a line about ``record``."""
    return {
        "client_reference": record.client_reference,
        "refund_id": record.crypto_refund_id,
        **more,
    }
