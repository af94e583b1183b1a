"""The JSON log line: its fixed fields, every extra field the caller passed, secrets redacted at
any depth, and the scheduler tick's per-second lines demoted to DEBUG."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from config.celery import celery_config
from config.settings import load_settings
from refunds.ops import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    logs.configure("INFO", json_lines=True)
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:], root.level = before[0], before[1]


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_extra_field_is_kept(captured: io.StringIO) -> None:
    conflict = {"kind": "another_refund_id", "ours": "r-1", "theirs": "r-2"}
    logging.getLogger("refunds.steps").warning(
        "provider news contradicts %s",
        "processing",
        extra={
            "client_reference": "order-7",
            "refund_id": "r-1",
            "conflict": conflict,
            "outcome": "flag",
            "txnHash": "0xabc",
            "trace_id": "4bf92f3577b34da6",
            "refund_address": None,
        },
    )
    (line,) = lines(captured)
    assert line["level"] == "warning" and line["logger"] == "refunds.steps"
    assert line["msg"] == "provider news contradicts processing"
    assert line["ts"].endswith("+00:00")
    assert line["conflict"] == conflict
    assert (line["outcome"], line["txnHash"], line["trace_id"]) == (
        "flag",
        "0xabc",
        "4bf92f3577b34da6",
    )
    assert (line["client_reference"], line["refund_id"]) == ("order-7", "r-1")
    assert "refund_address" not in line  # None says nothing
    assert not {"args", "levelno", "pathname", "color_message"} & set(line)


def _fail() -> None:
    raise RuntimeError("boom")


def test_an_exception_is_one_line_with_its_traceback(captured: io.StringIO) -> None:
    try:
        _fail()
    except RuntimeError:
        logging.getLogger("refunds.tasks").exception("step failed", extra={"operation": "create"})
    (line,) = lines(captured)
    assert line["error"] == "RuntimeError: boom"
    assert "Traceback" in line["traceback"] and "exc_info" not in line
    assert line["operation"] == "create"


def test_extra_fields_carrying_secrets_are_redacted(captured: io.StringIO) -> None:
    logging.getLogger("refunds.mce").info(
        "calling %s",
        "redis://:hunter2-pw@redis:6379/0",
        extra={
            "client_secret": "cs-live-123",
            "api_key": "ak-live-456",
            "headers": {"Authorization": "Bearer tok-live-789", "Accept": "application/json"},
            "attempts": [{"password": "pw-live-000"}],
            "note": "sent Bearer tok-live-789 to https://u:pw-live-111@mce.example/x",
            "webhook_secret": SecretStr("wh-live-222"),
            "settings": SecretStr("ss-live-333"),
        },
    )
    text = captured.getvalue()
    for secret in ("hunter2-pw", "cs-live", "ak-live", "tok-live", "pw-live", "wh-live", "ss-live"):
        assert secret not in text, secret
    (line,) = lines(captured)
    assert line["client_secret"] == line["api_key"] == logs.REDACTED
    assert line["headers"] == {"Authorization": logs.REDACTED, "Accept": "application/json"}
    assert line["msg"] == "calling redis://:***@redis:6379/0"
    assert line["note"] == "sent Bearer [redacted] to https://u:***@mce.example/x"


def _celery_record(name: str, msg: str, args: Any) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


TICK_LINES = [
    ("celery.beat", "Scheduler: Sending due task %s (%s)", ("refunds-tick", "refunds.tick")),
    ("celery.beat", "Scheduler: Sending due task %s (%s)", ("archive-drain", "archive.drain")),
    (
        "celery.worker.strategy",
        "Task %(name)s[%(id)s] received",
        ({"name": "refunds.tick", "id": "1"},),
    ),
    (
        "celery.app.trace",
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        ({"name": "refunds.tick", "id": "1", "runtime": 0.01, "return_value": 0},),
    ),
]


@pytest.mark.parametrize(("name", "msg", "args"), TICK_LINES)
def test_the_ticks_celery_lines_are_debug_lines(name: str, msg: str, args: Any) -> None:
    at_info = logs.TickAtDebug(logging.INFO)
    record = _celery_record(name, msg, args)
    assert at_info.filter(record) is False
    assert record.levelname == "DEBUG"
    assert logs.TickAtDebug(logging.DEBUG).filter(_celery_record(name, msg, args)) is True


def test_other_tasks_keep_their_info_lines() -> None:
    record = _celery_record(
        "celery.app.trace",
        "Task %(name)s[%(id)s] received",
        ({"name": "refunds.create", "id": "1"},),
    )
    assert logs.TickAtDebug(logging.INFO).filter(record) is True
    assert record.levelname == "INFO"


def test_the_every_second_tasks_are_the_ones_beat_sends() -> None:
    schedule = celery_config(load_settings(profile="sandbox"))["beat_schedule"]
    assert {entry["task"] for entry in schedule.values()} == logs.EVERY_SECOND_TASKS


def test_plain_text_logs_mask_url_passwords_and_bearer_tokens() -> None:
    record = logging.LogRecord(
        "refunds.cli", logging.INFO, __file__, 1, "redis://:pw-1@h/0 Bearer tok-1", None, None
    )
    text = logs.PlainFormatter().format(record)
    assert "pw-1" not in text and "tok-1" not in text
    assert text.endswith("INFO redis://:***@h/0 Bearer [redacted]")
