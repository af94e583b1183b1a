"""The error tree and the one response-to-error mapping function."""

from __future__ import annotations

import json
import pickle

import pytest
import requests

from refunds.errors import (
    ConflictError,
    FieldError,
    InvalidIntentError,
    MceAuthError,
    MceBadRequestError,
    MceConflictError,
    MceError,
    MceForbiddenError,
    MceNotFoundError,
    McePermanentError,
    MceProtocolError,
    MceRateLimitedError,
    MceServerError,
    MceTimeoutError,
    MceTransientError,
    MceUnprocessableError,
    RefundsError,
)
from refunds.mce.errors import error_from_response, is_error_envelope, parse_retry_after


def response(
    status: int,
    body: object = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = raw if raw is not None else json.dumps(body).encode()
    r.headers.update(headers or {})
    return r


def problem(status: int, code: str, log_id: str = "L123") -> dict[str, object]:
    return {
        "type": "about:blank",
        "title": "t",
        "status": status,
        "detail": "the detail",
        "instance": "/x",
        "code": code,
        "logId": log_id,
    }


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, MceBadRequestError),
        (401, MceAuthError),
        (403, MceForbiddenError),
        (404, MceNotFoundError),
        (409, MceConflictError),
        (422, MceUnprocessableError),
        (429, MceRateLimitedError),
        (500, MceServerError),
        (503, MceServerError),
        (504, MceServerError),
    ],
)
def test_each_status_maps_to_its_class(status: int, cls: type[MceError]) -> None:
    err = error_from_response(response(status, problem(status, "SOME_CODE")), "create")
    assert type(err) is cls
    assert err.status == status and err.code == "SOME_CODE" and err.log_id == "L123"
    assert err.operation == "create"
    assert "the detail" in str(err) and "logId=L123" in str(err)


def test_a_409_is_transient_unless_its_code_is_a_business_error() -> None:
    in_flight = error_from_response(response(409, problem(409, "REQUEST_IN_PROGRESS")), "create")
    assert isinstance(in_flight, MceConflictError) and isinstance(in_flight, MceTransientError)
    bare = error_from_response(response(409, raw=b""), "confirm")
    assert isinstance(bare, MceTransientError)
    business = error_from_response(
        response(409, problem(409, "DUPLICATE_CLIENT_REFERENCE")), "create"
    )
    assert isinstance(business, McePermanentError) and business.code == "DUPLICATE_CLIENT_REFERENCE"


def test_transient_and_permanent_branches() -> None:
    assert issubclass(MceRateLimitedError, MceTransientError)
    assert issubclass(MceServerError, MceTransientError)
    assert issubclass(MceTimeoutError, MceTransientError)
    assert issubclass(MceUnprocessableError, McePermanentError)
    assert not issubclass(MceAuthError, (MceTransientError, McePermanentError))
    assert issubclass(MceError, RefundsError)


def test_html_502_is_a_transient_server_error_not_a_crash() -> None:
    err = error_from_response(
        response(
            502,
            raw=b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            headers={"Content-Type": "text/html"},
        ),
        "get",
    )
    assert isinstance(err, MceServerError)
    assert err.status == 502 and err.code is None
    assert "non-JSON" in str(err)


def test_empty_body_and_json_array_bodies_are_classified_by_status() -> None:
    assert isinstance(error_from_response(response(503, raw=b""), "get"), MceServerError)
    assert isinstance(error_from_response(response(422, [1, 2]), "get"), MceUnprocessableError)


def test_retry_after_is_read_from_the_header() -> None:
    err = error_from_response(
        response(429, problem(429, "RATE_LIMITED"), {"Retry-After": "3"}), "create"
    )
    assert isinstance(err, MceRateLimitedError) and err.retry_after == 3.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None


def test_code_wins_over_status_for_not_found() -> None:
    err = error_from_response(response(422, problem(422, "CRYPTO_REFUND_NOT_FOUND")), "get")
    assert isinstance(err, MceNotFoundError) and err.status == 422


@pytest.mark.parametrize(
    "exc",
    [
        MceRateLimitedError(
            "slow down",
            status=429,
            code="RATE_LIMITED",
            log_id="L1",
            retry_after=2.0,
            operation="create",
        ),
        MceTimeoutError("timed out", operation="get"),
        FieldError("clientReference", "is required", 3),
        InvalidIntentError([FieldError("a", "b", 1), FieldError("c", "d")]),
        ConflictError("ref-1", ["originalTransactionId"]),
    ],
)
def test_errors_survive_pickling_with_their_fields(exc: Exception) -> None:
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own objects
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert vars(copy) == vars(exc) or str(copy) == str(exc)
    if isinstance(exc, MceError):
        assert isinstance(copy, MceError)
        assert (copy.status, copy.code, copy.log_id, copy.retry_after, copy.operation) == (
            exc.status,
            exc.code,
            exc.log_id,
            exc.retry_after,
            exc.operation,
        )


def test_as_dict_is_what_the_ledger_keeps() -> None:
    err = MceUnprocessableError(
        "MCE create failed: nope",
        status=422,
        code="CRYPTO_REFUND_NOT_PENDING",
        log_id="abc",
        operation="create",
        msg="nope",
    )
    assert err.as_dict() == {
        "type": "MceUnprocessableError",
        "message": "MCE create failed: nope",
        "status": 422,
        "code": "CRYPTO_REFUND_NOT_PENDING",
        "logId": "abc",
        "msg": "nope",
        "operation": "create",
    }


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("CRYPTO_REFUND_NOT_PENDING", MceUnprocessableError),
        ("CRYPTO_REFUND_NOT_FOUND", MceNotFoundError),
        (500, MceServerError),
        ("503", MceServerError),
        (422, MceUnprocessableError),
        (429, MceRateLimitedError),
        ("201", MceProtocolError),
    ],
)
def test_an_error_envelope_in_a_200_is_mapped_by_its_code(code: object, cls: type) -> None:
    body = {"code": code, "msg": "the provider's words", "logId": "L9"}
    err = error_from_response(response(200, body), "create")
    assert type(err) is cls
    assert (err.status, err.code, err.msg, err.log_id) == (
        200,
        str(code),
        "the provider's words",
        "L9",
    )
    assert "the provider's words" in err.message


@pytest.mark.parametrize(
    ("body", "is_error"),
    [
        ({"code": "CRYPTO_REFUND_NOT_PENDING"}, True),
        ({"code": 500, "msg": "x"}, True),
        ({"code": 200, "data": {}}, False),
        ({"code": "200", "data": {}}, False),
        ({"access_token": "t", "expires_in": 60}, False),  # OAuth: no code at all
        ({"code": "", "data": {}}, False),
        ([1, 2], False),
    ],
)
def test_only_an_envelope_whose_code_is_not_success_is_an_error(
    body: object, is_error: bool
) -> None:
    assert is_error_envelope(body) is is_error
