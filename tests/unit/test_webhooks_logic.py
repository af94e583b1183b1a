"""Webhook verification and parsing, and outcome-callback signing: pure logic."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from refunds.errors import WebhookRejectedError
from refunds.notify import notification_id, sign
from refunds.webhooks import parse, signature, verify

SECRET = "whsec-unit"
BODY = json.dumps(
    {
        "eventType": "crypto.refund.updated",
        "notificationId": "n1",
        "data": {"cryptoRefundId": "CR1", "clientReference": "r1", "status": 3},
    }
).encode()


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, "1700000000", BODY) == expected


def test_valid_signature_within_tolerance_passes() -> None:
    verify(
        SECRET,
        "1700000000",
        signature(SECRET, "1700000000", BODY),
        BODY,
        tolerance=300,
        at=1700000100,
    )


def test_uppercase_hex_signature_is_accepted() -> None:
    sig = signature(SECRET, "1700000000", BODY).upper()
    verify(SECRET, "1700000000", sig, BODY, tolerance=300, at=1700000000)


@pytest.mark.parametrize(
    ("timestamp", "sig", "body", "at", "status"),
    [
        (None, "x", BODY, 1700000000, 401),  # no timestamp
        ("1700000000", None, BODY, 1700000000, 401),  # no signature
        ("1700000000", "00" * 32, BODY, 1700000000, 401),  # forged
        ("1700000000", "sig-of-other-body", BODY + b" ", 1700000000, 401),  # body changed
        ("1700000000", "good", BODY, 1700000301, 400),  # stale
        ("1700000000", "good", BODY, 1699999699, 400),  # from the future
    ],
)
def test_rejections(
    timestamp: str | None, sig: str | None, body: bytes, at: float, status: int
) -> None:
    if sig == "good":
        sig = signature(SECRET, str(timestamp), body)
    elif sig == "sig-of-other-body":
        sig = signature(SECRET, str(timestamp), BODY)
    with pytest.raises(WebhookRejectedError) as info:
        verify(SECRET, timestamp, sig, body, tolerance=300, at=at)
    assert info.value.status == status


def test_a_signature_made_with_another_secret_is_refused() -> None:
    sig = signature("other-secret", "1700000000", BODY)
    with pytest.raises(WebhookRejectedError) as info:
        verify(SECRET, "1700000000", sig, BODY, tolerance=300, at=1700000000)
    assert info.value.status == 401


def test_parse_returns_id_type_and_data() -> None:
    nid, kind, data = parse(BODY)
    assert (nid, kind, data["status"]) == ("n1", "crypto.refund.updated", 3)


@pytest.mark.parametrize(
    "body",
    [
        b"{nope",
        b"[]",
        b'{"eventType": "x", "data": {}}',
        b'{"notificationId": "n", "data": {}}',
        b'{"notificationId": "n", "eventType": "x", "data": 5}',
        b'{"notificationId": "", "eventType": "x", "data": {}}',
        b"\xff\xfe",
    ],
)
def test_malformed_events_are_400(body: bytes) -> None:
    with pytest.raises(WebhookRejectedError) as info:
        parse(body)
    assert info.value.status == 400


def test_outcome_ids_are_stable_and_callbacks_signed_like_webhooks() -> None:
    assert notification_id("r1") == notification_id("r1") != notification_id("r2")
    assert sign(SECRET, 1700000000, BODY) == signature(SECRET, "1700000000", BODY)
