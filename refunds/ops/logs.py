"""Structured JSON logs with the refund's ids, for every process of the pipeline.

Each line is one JSON object: ``ts``, ``level``, ``logger``, ``msg``, the Celery task's
``task_id`` and ``task_name`` when there is one (steps need not pass them around), and every field
the caller passed in ``extra`` (``client_reference``, ``refund_id``, ``conflict``, ``outcome``,
``txnHash``, a trace id tomorrow), so nothing a caller logs is dropped by a list kept here. The
formatting is python-json-logger's; what is ours is the shape and the redaction.

Callers never log a secret, and ``Settings.safe_summary`` masks secrets before settings are
logged. As a second line of defence every line is redacted on its way out: a field whose name says
it holds a secret (``client_secret``, ``password``, ``token``, ``api_key``, ``authorization``...)
is replaced, at any depth, a URL's password and a bearer token in any text are masked, and a
``SecretStr`` prints as asterisks.

The scheduler tick and the archiver's drain run every second; Celery's own lines about them (beat
sending one, the worker receiving it, its success) are logged at DEBUG rather than INFO, or each
would be 3 lines a second (260,000 a day) in every INFO log.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

#: The scheduler tick's task name (config/celery.py's beat schedule; a unit test checks they agree).
TICK_TASK = "refunds.tick"
#: Every task beat sends about once a second: the tick and the archiver's drain.
EVERY_SECOND_TASKS = frozenset({TICK_TASK, "archive.drain"})
#: Celery's loggers that write a line per task sent, received and succeeded.
_TICK_LOGGERS = frozenset({"celery.beat", "celery.worker.strategy", "celery.app.trace"})

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(
    r"secret|passw|token|api[_-]?key|authori[sz]ation|credential|signature|cookie|private[_-]?key",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# uvicorn's ``color_message`` repeats ``msg`` with terminal colour codes: not a field of its own.
_NOT_FIELDS = [*RESERVED_ATTRS, "taskName", "color_message"]


def redact(value: Any, name: str = "") -> Any:
    """``value`` with secrets masked: by field name at any depth, URL passwords and bearer
    tokens inside text."""
    if name and _SECRET_NAME.search(name):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return _BEARER.sub(r"\1 " + REDACTED, _URL_PASSWORD.sub(r"\g<head>***@", value))
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value


def _current_task() -> tuple[str | None, str | None]:
    try:
        from celery import current_task  # noqa: PLC0415 - optional: the CLI logs without Celery
    except ImportError:  # pragma: no cover
        return None, None
    task = current_task
    if task is None or not getattr(task, "request", None) or task.request.id is None:
        return None, None
    return task.request.id, task.name


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger with the pipeline's field names, the task's ids and redaction."""

    def __init__(self) -> None:
        super().__init__(
            "%(message)s",
            rename_fields={"message": "msg"},
            reserved_attrs=_NOT_FIELDS,
            json_ensure_ascii=False,
            json_default=str,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        log_data["level"] = record.levelname.lower()
        log_data["logger"] = record.name
        task_id, task_name = _current_task()
        if task_id:
            log_data["task_id"] = task_id
            log_data["task_name"] = task_name
        super().add_fields(log_data, record, message_dict)
        traceback = log_data.pop("exc_info", None)
        if record.exc_info and record.exc_info[0] is not None:
            log_data["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        if traceback:
            # The whole traceback, in one field: a critical error must be diagnosable from the
            # JSON logs alone. Our exceptions never carry secrets (see refunds.errors).
            log_data["traceback"] = traceback

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # A field passed as None says nothing (a refund id before Create): left out, as before.
        return {key: redact(value, key) for key, value in log_data.items() if value is not None}


class PlainFormatter(logging.Formatter):
    """Plain text for a terminal (``REFUNDS_LOG_JSON=false``), with the same text redaction."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return str(redact(super().format(record)))


class TickAtDebug(logging.Filter):
    """Celery's per-tick INFO lines become DEBUG lines (kept only when the level is DEBUG)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.threshold = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _about_the_tick(record):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.threshold <= logging.DEBUG
        return True


def _about_the_tick(record: logging.LogRecord) -> bool:
    if record.name not in _TICK_LOGGERS:
        return False
    args = record.args
    if isinstance(args, dict):  # worker: received / succeeded, with the task's context
        return args.get("name") in EVERY_SECOND_TASKS
    # beat: "Sending due task %s (%s)"
    return isinstance(args, tuple) and any(arg in EVERY_SECOND_TASKS for arg in args)


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines (or plain text for a terminal)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler.addFilter(TickAtDebug(root.level))
    root.handlers[:] = [handler]
    # urllib3 logs full request lines at DEBUG; keep them out even when debugging the pipeline.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
