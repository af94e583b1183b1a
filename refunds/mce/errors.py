"""The one function that turns an MCE answer into a typed error (stripe-python's shape).

Branch on the problem's ``code`` first and on the HTTP status second: the contract warns that the
same business error may come as 409 or 422, and "not found" as 404 or 422.
"""

from __future__ import annotations

import json
from typing import Any

import requests

from refunds.errors import (
    MceAuthError,
    MceBadRequestError,
    MceConflictError,
    MceError,
    MceForbiddenError,
    MceNotFoundError,
    MceRateLimitedError,
    MceServerError,
    MceUnprocessableError,
)
from refunds.mce.contract import Code

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


def _problem(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _class_for(status: int, code: str | None) -> type[MceError]:
    if code == Code.NOT_FOUND:
        return MceNotFoundError
    if status == 409 and code in set(Code):  # a business error sent as 409: as its 422
        return MceUnprocessableError
    if status >= 500 or status < 400:
        # 5xx, and anything outside 4xx that is not a success (a gateway's 3xx, say)
        return MceServerError
    return _BY_STATUS.get(status, MceBadRequestError)


def error_from_response(response: requests.Response, operation: str) -> MceError:
    """Map a non-success answer to the error class the pipeline acts on.

    A body that is not a JSON object (a gateway's HTML 502, an empty 503) is classified by the
    status alone: such answers are never a crash.
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
    detail = problem.get("detail") or problem.get("title") or problem.get("msg") or "no detail"
    return _class_for(status, code)(
        f"MCE {operation} failed: {detail}",
        status=status,
        code=code,
        log_id=str(log_id) if log_id is not None else None,
        retry_after=retry_after,
        operation=operation,
    )
