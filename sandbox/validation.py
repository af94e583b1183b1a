"""Request-body checks shared by the provider and admin endpoints.

Each failure is a 400 ``INVALID_REQUEST`` whose detail names the field, because a client (or a
test) debugging a rejected call needs to know which field, not just that something was wrong.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.problems import invalid


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; NaN/Infinity and non-objects are refused."""
    try:
        value = json.loads(body or b"null", parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid("request body must be a JSON object")
    return value


def parse_optional_json_object(body: bytes) -> dict[str, Any] | None:
    """Like :func:`parse_json_object`, but an empty body means "no body"."""
    return parse_json_object(body) if body.strip() else None


def require_str(obj: dict[str, Any], name: str, label: str | None = None) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{label or name}: required, must be a non-empty string")
    return value


def optional_str(obj: dict[str, Any], name: str, default: str, label: str | None = None) -> str:
    if name not in obj or obj[name] is None:
        return default
    return require_str(obj, name, label)


def require_transaction_type(obj: dict[str, Any], label: str | None = None) -> int:
    name = "originalTransactionType"
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3:
        raise invalid(f"{label or name}: required, must be an integer 1, 2 or 3")
    return value


def require_amount(obj: dict[str, Any], name: str, default: str, label: str) -> str:
    """A positive decimal string. Money never travels as a JSON number."""
    amount = optional_str(obj, name, default, label)
    try:
        parsed = Decimal(amount)
    except InvalidOperation:
        raise invalid(f'{label}: must be a decimal string such as "12.50"') from None
    if not parsed.is_finite() or parsed <= 0:
        raise invalid(f"{label}: must be a positive decimal string")
    return amount
