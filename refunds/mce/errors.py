"""The one function that turns an MCE answer into a typed error (stripe-python's shape).

Branch on the problem's ``code`` first and on the HTTP status second: the contract warns that the
same business error may come as 409 or 422, and "not found" as 404 or 422. A 2xx whose envelope
carries an error code goes through the same function: the HTTP status alone never decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from refunds.errors import (
    MceAuthError,
    MceBadRequestError,
    MceConflictError,
    MceError,
    MceForbiddenError,
    MceNotFoundError,
    MceProtocolError,
    MceRateLimitedError,
    MceServerError,
    MceUnprocessableError,
)
from refunds.mce.contract import SUCCESS_CODES, Code

_BY_STATUS: dict[int, type[MceError]] = {
    400: MceBadRequestError,
    401: MceAuthError,
    403: MceForbiddenError,
    404: MceNotFoundError,
    409: MceConflictError,
    422: MceUnprocessableError,
    429: MceRateLimitedError,
}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is rare from APIs and read as absent."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)


class HttpAnswer(Protocol):
    """What the mapping reads of an answer: a ``requests.Response`` or the client's own record."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...


def _problem(response: HttpAnswer) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def is_error_envelope(body: object) -> bool:
    """A 2xx body that is MCE's envelope carrying an error: a ``code`` that is not success.

    An OAuth token answer has no ``code`` at all, and a success envelope has 200 or "200".
    """
    if not isinstance(body, dict) or body.get("code") in (None, ""):
        return False
    code = body["code"]
    return not (isinstance(code, int | str) and code in SUCCESS_CODES)


def _numeric(code: str | None) -> int | None:
    return int(code) if code is not None and code.isdigit() else None


def _class_for(status: int, code: str | None) -> type[MceError]:
    if code == Code.NOT_FOUND:
        return MceNotFoundError
    if status == 409 and code in set(Code):  # a business error sent as 409: as its 422
        return MceUnprocessableError
    if 200 <= status < 300:
        # An error envelope in a 2xx answer: its code decides, as a status would. A numeric code
        # is read as the status it names (500 transient, 422 permanent, ...); a business code
        # (CRYPTO_REFUND_NOT_PENDING) is what a 422 carries: permanent at once.
        numeric = _numeric(code)
        if numeric is None:
            return MceUnprocessableError
        if 200 <= numeric < 300:
            return MceProtocolError  # "success" spelled other than 200: not the contract
        status = numeric
    if status >= 500 or status < 400:
        # 5xx, and anything outside 4xx that is not a success (a gateway's 3xx, say)
        return MceServerError
    return _BY_STATUS.get(status, MceBadRequestError)


def error_from_response(response: HttpAnswer, operation: str) -> MceError:
    """Map a non-success answer to the error class the pipeline acts on.

    The one mapping, for an HTTP error status (4xx/5xx, an RFC 7807 problem) and for a 2xx whose
    envelope carries an error code alike. The error keeps the provider's ``code``, its message
    (``detail``, ``title`` or the envelope's ``msg``) and ``logId``. A body that is not a JSON
    object (a gateway's HTML 502, an empty 503) is classified by the status alone: such answers
    are never a crash.
    """
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    problem = _problem(response)
    if problem is None:
        return _class_for(status, None)(
            f"MCE {operation} failed: HTTP {status} with a non-JSON body",
            status=status,
            retry_after=retry_after,
            operation=operation,
        )
    raw_code = problem.get("code")
    code = str(raw_code) if raw_code not in (None, "") else None
    log_id = problem.get("logId")
    said = problem.get("detail") or problem.get("title") or problem.get("msg")
    msg = str(said) if said not in (None, "") else None
    return _class_for(status, code)(
        f"MCE {operation} failed: {msg or 'no detail'}",
        status=status,
        code=code,
        log_id=str(log_id) if log_id is not None else None,
        retry_after=retry_after,
        operation=operation,
        msg=msg,
    )
