"""Webhook verification (MCE's ``X-Signature: t=<epoch ms>,v0=<hex>``) and parsing: pure logic."""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal

import pytest

from refunds.errors import WebhookRejectedError
from refunds.notify import notification_id, sign
from refunds.webhooks import is_refund_event, parse, parse_signature_header, signature, verify

SECRET = "whsec-unit"
BODY = json.dumps(
    {
        "eventType": "crypto.refund.updated",
        "notificationId": "n1",
        "data": {"cryptoRefundId": "CR1", "clientReference": "r1", "status": 3},
    }
).encode()
T = "1796030000000"  # epoch milliseconds
NOW = 1796030000.0  # the same instant in seconds
TOLERANCE = 300.0


def header(t: str = T, *, secret: str = SECRET, body: bytes = BODY, extra: str = "") -> str:
    return f"t={t},v0={signature(secret, t, body)}{extra}"


def rejected(hdr: str | None, *, body: bytes = BODY, at: float = NOW) -> int:
    with pytest.raises(WebhookRejectedError) as info:
        verify(SECRET, hdr, body, tolerance=TOLERANCE, at=at)
    return info.value.status


def test_signature_is_hmac_sha256_of_t_dot_raw_body() -> None:
    expected = hmac.new(SECRET.encode(), T.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, T, BODY) == expected


def test_valid_header_passes() -> None:
    verify(SECRET, header(), BODY, tolerance=TOLERANCE, at=NOW)


def test_spaces_around_pairs_and_uppercase_hex_are_accepted() -> None:
    sig = signature(SECRET, T, BODY).upper()
    verify(SECRET, f" t={T} , v0={sig} ", BODY, tolerance=TOLERANCE, at=NOW)


@pytest.mark.parametrize(
    "t",
    [
        "NaN",
        "nan",
        "1_796_030_000",
        "1796030000.5",
        "+1796030000",
        "1.79603e9",
        "\u0661\u0667\u0669\u0666\u0660\u0663\u0660\u0660\u0660\u0660",  # Arabic-Indic digits
        "-1796030000000",
        " ",
        "",
        "1" * 17,
        "\uff10\uff11\uff12",  # fullwidth digits
    ],
)
def test_a_correctly_signed_timestamp_that_is_not_ascii_digits_is_400(t: str) -> None:
    # Signed with exactly that t, so only the timestamp rule can refuse it.
    assert rejected(f"t={t},v0={signature(SECRET, t, BODY)}") == 400


def test_timestamp_is_milliseconds_and_tolerance_is_symmetric() -> None:
    limit_ms = int(TOLERANCE * 1000)
    for offset_ms in (-limit_ms, limit_ms, 0, 1):
        t = str(int(T) + offset_ms)
        verify(SECRET, header(t), BODY, tolerance=TOLERANCE, at=NOW)
    for offset_ms in (-limit_ms - 1, limit_ms + 1):  # 1 ms past either edge
        t = str(int(T) + offset_ms)
        assert rejected(header(t)) == 400


def test_a_timestamp_in_seconds_is_stale_not_accepted() -> None:
    seconds = str(int(NOW))
    assert rejected(header(seconds)) == 400


def test_secret_rotation_any_matching_v0_passes() -> None:
    old = signature("old-secret", T, BODY)
    good = signature(SECRET, T, BODY)
    verify(SECRET, f"t={T},v0={old},v0={good}", BODY, tolerance=TOLERANCE, at=NOW)
    verify(SECRET, f"t={T},v0={good},v0={old}", BODY, tolerance=TOLERANCE, at=NOW)
    assert rejected(f"t={T},v0={old},v0={'0' * 64}") == 401


def test_unknown_schemes_are_ignored() -> None:
    verify(SECRET, header(extra=",v1=deadbeef,x=1"), BODY, tolerance=TOLERANCE, at=NOW)
    # A v1 that would "match" is not a signature we accept.
    assert rejected(f"t={T},v1={signature(SECRET, T, BODY)}") == 401


@pytest.mark.parametrize(
    ("hdr", "status"),
    [
        (None, 401),
        ("", 401),
        (f"v0={signature(SECRET, T, BODY)}", 400),  # no t
        (f"t={T}", 401),  # no v0
        (f"t={T},v0=", 401),  # empty v0
        (f"t={T},v0={'0' * 64}", 401),  # forged
        (f"t={T},t=1796030000001,v0={signature(SECRET, T, BODY)}", 400),  # two timestamps
        ("garbage", 400),
    ],
)
def test_missing_or_malformed_headers(hdr: str | None, status: int) -> None:
    assert rejected(hdr) == status


def test_body_changed_or_other_secret_is_401() -> None:
    assert rejected(header(), body=BODY + b" ") == 401
    assert rejected(header(secret="other-secret")) == 401


def test_the_old_invented_pair_is_not_accepted() -> None:
    # X-MCE-Timestamp/X-MCE-Signature are gone: a bare hex signature is no X-Signature value.
    assert rejected(signature(SECRET, T, BODY)) == 400


def test_parse_header_keeps_every_v0_and_the_timestamp() -> None:
    assert parse_signature_header("t=1,v0=a,v1=b,v0=c") == ("1", ["a", "c"])


def test_parse_returns_id_type_and_data_with_decimal_numbers() -> None:
    nid, kind, data = parse(BODY)
    assert (nid, kind, data["status"]) == ("n1", "crypto.refund.updated", 3)
    body = (
        b'{"code":200,"msg":"success","eventType":"crypto.refund.updated.v2",'
        b'"notificationId":"n2","data":{"cryptoRefundId":"CR1","amount":1000.000000000000000001,'
        b'"feeAmount":0.00000021}}'
    )
    _, kind, data = parse(body)
    assert kind == "crypto.refund.updated.v2"
    assert data["amount"] == Decimal("1000.000000000000000001")
    assert str(data["feeAmount"]) == "2.1E-7"  # the exact value; formatting is the formatter's job
    assert data["feeAmount"] == Decimal("0.00000021")


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("crypto.refund.updated", {"cryptoRefundId": "CR1"}, True),
        ("crypto.refund.updated.v2", {"cryptoRefundId": "CR1"}, True),
        ("crypto.refund.something", {"cryptoRefundId": "CR1"}, True),  # routed on the payload
        ("crypto.deposit.updated.v2", {"depositId": "D1", "amount": 5}, False),
        ("crypto.refund.updated", {"cryptoRefundId": ""}, False),
        ("crypto.refund.updated", {"cryptoRefundId": 7}, False),
    ],
)
def test_refund_events_are_recognised_by_payload(
    kind: str, data: dict[str, object], expected: bool
) -> None:
    assert is_refund_event(kind, data) is expected


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


def test_outcome_ids_are_stable_and_callbacks_signed_with_the_same_hmac() -> None:
    assert notification_id("r1") == notification_id("r1") != notification_id("r2")
    assert sign(SECRET, 1700000000, BODY) == signature(SECRET, "1700000000", BODY)
