"""Structured JSON logs with the refund's ids, for every process of the pipeline.

Each line is one JSON object with ``client_reference``, ``refund_id`` and ``task_id`` when known.
The task id comes from Celery's current task, so steps need not pass it around. Nothing here ever
formats a token or a secret: callers pass ids and provider codes, and ``Settings.safe_summary``
masks secrets before settings are logged.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = (
    "client_reference",
    "refund_id",
    "task_id",
    "task_name",
    "state",
    "from_state",
    "to_state",
    "operation",
    "status",
    "code",
    "log_id",
    "attempt",
    "delay",
    "provider_status",
    "reason",
    "txn_hash",
    "conflict",
)


def _current_task() -> tuple[str | None, str | None]:
    try:
        from celery import current_task  # noqa: PLC0415 - optional: the CLI logs without Celery
    except ImportError:  # pragma: no cover
        return None, None
    task = current_task
    if task is None or not getattr(task, "request", None) or task.request.id is None:
        return None, None
    return task.request.id, task.name


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        task_id, task_name = _current_task()
        if task_id:
            entry["task_id"] = task_id
            entry["task_name"] = task_name
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            # The whole traceback, in one field: a critical error must be diagnosable from the
            # JSON logs alone. Our exceptions never carry secrets (see refunds.errors).
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines (or plain text for a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 logs full request lines at DEBUG; keep them out even when debugging the pipeline.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
