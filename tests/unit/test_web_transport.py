"""The HTTP transport policy's pure parts: which Content-Types count as JSON, the body-limit
setting and its old name."""

from __future__ import annotations

import pytest

from config.settings import Settings
from refunds.web.transport import is_json


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON;charset=UTF-8", True),
        ("application/problem+json", True),
        (None, False),
        ("", False),
        ("text/plain", False),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonx", False),
        ("application/octet-stream", False),
    ],
)
def test_json_content_types(content_type: str | None, expected: bool) -> None:
    assert is_json(content_type) is expected


def test_body_limit_setting_defaults_to_64_kib_and_reads_both_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REFUNDS_MAX_BODY_BYTES", raising=False)
    monkeypatch.delenv("REFUNDS_WEBHOOK_MAX_BODY_BYTES", raising=False)
    assert Settings(profile="sandbox").max_body_bytes == 65536
    monkeypatch.setenv("REFUNDS_WEBHOOK_MAX_BODY_BYTES", "2048")
    assert Settings(profile="sandbox").max_body_bytes == 2048
    monkeypatch.setenv("REFUNDS_MAX_BODY_BYTES", "4096")
    assert Settings(profile="sandbox").max_body_bytes == 4096
