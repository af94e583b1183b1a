"""The simulator's switches: fault rates, delays, and the provider behaviours the contract leaves
open.

Kept in one frozen object so that a request reads one consistent snapshot (the admin API swaps the
whole object, it never edits one in place), and validated here with the standard library only, so
that a typo in a test's or demo's config fails loudly, naming the field, instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

#: Operations that faults can be applied to (the provider's endpoints, by short name).
OPERATIONS = ("token", "create", "confirm", "get")
#: HTTP statuses the error injector can answer with instead of doing the work.
INJECTABLE_ERRORS = ("409", "429", "500", "502", "503")
#: Refund statuses with a meaning in the contract; an "unknown" status must be none of them.
KNOWN_STATUSES = frozenset({1, 2, 3, 4, 5})
#: In ``webhook_events``, stands for every status value outside :data:`KNOWN_STATUSES`.
UNKNOWN_EVENTS = "unknown"
#: API version prefixes served (contract 2: the seed uses /v1.0, the v2.0 docs /v2.0, same tails).
API_VERSIONS = ("v1.0", "v2.0")
#: Create Token answer shapes (contract 3 allows any of them; the client must read all).
TOKEN_SHAPES = ("oauth", "envelope", "envelope_snake", "no_lifetime")
#: Refund event names a webhook may carry (contract 6).
EVENT_TYPES = ("crypto.refund.updated", "crypto.refund.updated.v2")
#: Wire fields of a refund that ``refund_overrides`` may replace (amounts as text, any text).
OVERRIDABLE = ("amount", "currency", "feeAmount", "feeCurrency")
#: The pipeline's sandbox-profile default for MCE_WEBHOOK_SECRET, so the two agree with no setup.
DEFAULT_WEBHOOK_SECRET = "sandbox-webhook-secret"  # noqa: S105 - a published sandbox value


class ConfigError(ValueError):
    """A bad config field or value; the message starts with the field's name."""


def _default_error_rates() -> dict[str, float]:
    return dict.fromkeys(INJECTABLE_ERRORS, 0.0)


@dataclass(frozen=True)
class SandboxConfig:
    """Everything a test, the demo or a benchmark may switch at run time.

    ``error_rates`` is replaced as a whole by :meth:`merge` (missing statuses become 0): "the error
    rates are now exactly these" is easier to reason about in a test than a partial overlay.
    """

    latency_ms: float = 0.0
    error_rates: Mapping[str, float] = field(default_factory=_default_error_rates)
    retry_after_seconds: float = 1.0
    lost_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 5000.0
    max_rps: float | None = None
    fault_operations: tuple[str, ...] = ("create", "confirm", "get")
    duplicate_mode: str = "return"
    confirm_mode: str = "return"
    not_found_status: int = 404
    token_ttl_seconds: float = 3600.0
    processing_seconds: float = 2.0
    unknown_status_seconds: float = 0.0
    unknown_status_value: int = 9
    idempotency: bool = True
    # The Crypto Refund Webhook (off while webhook_url is None); see sandbox/webhooks.py.
    webhook_url: str | None = None
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    webhook_delay_ms: float = 0.0
    webhook_jitter_ms: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_drop_rate: float = 0.0
    webhook_max_attempts: int = 5
    webhook_retry_base_ms: float = 200.0
    webhook_timeout_seconds: float = 3.0
    webhook_events: tuple[int | str, ...] = (1, 2, 3, 4, 5, UNKNOWN_EVENTS)
    # Contract v2 shapes (provider-contract.md 2, 3, 5, 6): what the client must read either way.
    token_shape: str = "oauth"  # noqa: S105 - an answer shape, not a secret
    webhook_event_type: str = "crypto.refund.updated"
    webhook_code_msg: bool = False
    webhook_amounts_as_numbers: bool = False
    amounts_as_numbers: bool = False
    status_info: bool = False
    refund_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Provider behaviours the contract allows and a careful client must survive (issue 10).
    confirm_async_seconds: float = 0.0
    address_echo: bool = False
    other_refund_id: tuple[str, ...] = ()
    complete_unconfirmed_seconds: float | None = None
    not_found_lag_seconds: float = 0.0
    # A credentials incident (issue 11): while set (401 or 403), the token endpoint refuses every
    # request as if the client id or secret were wrong. A test sets it, waits N seconds, clears it.
    token_refuse_status: int | None = None
    # How an answer travels (faulty operations only, see sandbox/shaping.py): trickled a few bytes
    # per interval, padded to a size, never ending; or an HTTP 200 whose envelope carries an error.
    trickle_bytes: int = 0  # 0: off; else bytes written per trickle_interval_ms (head included)
    trickle_interval_ms: float = 200.0
    answer_size_bytes: int = 0  # 0: off; else the success answer is padded to this many bytes
    endless_answer: bool = False  # the head, then filler bytes until the client hangs up
    envelope_error_code: int | str | None = None  # e.g. "CRYPTO_REFUND_NOT_PENDING" or 500
    envelope_error_msg: str = "sandbox envelope error"

    def __post_init__(self) -> None:
        # Direct construction is validated too, so no code path can hold an invalid config.
        for f in dataclasses.fields(self):
            normalized = _VALIDATORS[f.name](f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, normalized)

    def merge(self, partial: Mapping[str, Any]) -> SandboxConfig:
        """Return a new config with ``partial`` applied; ``self`` is never changed.

        Raises ConfigError (a ValueError) naming the first unknown field or bad value, so that a
        rejected update leaves the running config exactly as it was.
        """
        if not isinstance(partial, Mapping):
            raise ConfigError("config must be a JSON object")
        unknown = sorted(set(partial) - set(_VALIDATORS))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown config field")
        return dataclasses.replace(self, **dict(partial))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape served by ``GET /sandbox/config`` and accepted back by ``merge``."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def overrides_for(self, client_reference: str) -> dict[str, str]:
        """Wire-field overrides for one refund: the ``"*"`` entry, then the reference's own."""
        merged = dict(self.refund_overrides.get("*", {}))
        merged.update(self.refund_overrides.get(client_reference, {}))
        return merged

    def names_other_id(self, client_reference: str) -> bool:
        """Whether Get and webhooks for this reference name another refund id and hash."""
        return any(client_reference.startswith(prefix) for prefix in self.other_refund_id)

    def sends_webhook_for(self, status: int) -> bool:
        """Whether a change to ``status`` is POSTed (a webhook URL is set and the status listed)."""
        if self.webhook_url is None:
            return False
        if status in KNOWN_STATUSES:
            return status in self.webhook_events
        return status in self.webhook_events or UNKNOWN_EVENTS in self.webhook_events


def _plain(value: Any) -> Any:
    """A field's value as JSON holds it: tuples as lists, mappings as (nested) dicts."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


# --- validators: each takes (field name, raw value) and returns the normalized value ----------

Validator = Callable[[str, object], object]


def _number(name: str, value: object) -> float:
    # bool is an int subclass; `true` where a number belongs is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}: must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name}: must be finite")
    return number


def _non_negative(name: str, value: object) -> float:
    number = _number(name, value)
    if number < 0:
        raise ConfigError(f"{name}: must be >= 0")
    return number


def _positive(name: str, value: object) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ConfigError(f"{name}: must be > 0")
    return number


def _probability(name: str, value: object) -> float:
    number = _number(name, value)
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{name}: must be between 0 and 1")
    return number


def _optional_positive(name: str, value: object) -> float | None:
    return None if value is None else _positive(name, value)


def _error_rates(name: str, value: object) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: must be an object of status -> probability")
    rates = _default_error_rates()
    for status, rate in value.items():
        if status not in rates:
            raise ConfigError(f"{name}.{status}: status must be one of {list(INJECTABLE_ERRORS)}")
        rates[status] = _probability(f"{name}.{status}", rate)
    # One draw picks at most one error, so the rates are shares of one probability mass.
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ConfigError(f"{name}: rates must add up to at most 1")
    return rates


def _operations(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{name}: must be a list of operations")
    for op in value:
        if op not in OPERATIONS:
            raise ConfigError(f"{name}: {op!r} is not one of {list(OPERATIONS)}")
    return tuple(dict.fromkeys(value))


def _choice(*options: str) -> Validator:
    def validate(name: str, value: object) -> str:
        if value not in options:
            raise ConfigError(f"{name}: must be one of {list(options)}")
        return str(value)

    return validate


def _not_found_status(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (404, 422):
        raise ConfigError(f"{name}: must be 404 or 422")
    return value


def _refuse_status(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in (401, 403):
        raise ConfigError(f"{name}: must be 401, 403 or null")
    return value


def _unknown_status(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: must be an integer")
    if value in KNOWN_STATUSES:
        raise ConfigError(f"{name}: must not be a known status (1..5)")
    return value


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: must be true or false")
    return value


def _optional_url(name: str, value: object) -> str | None:
    if value is None:
        return None
    problem = f"{name}: must be null or an http(s) URL with a host, e.g. http://127.0.0.1:8000/hook"
    if not isinstance(value, str):
        raise ConfigError(problem)
    try:
        parts = urlsplit(value)
        _ = parts.port  # parsing the port is what catches "http://host:abc"
    except ValueError:
        raise ConfigError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(problem)
    return value


def _non_empty_str(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name}: must be a non-empty string")
    return value


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: must be an integer >= 1")
    return value


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}: must be an integer >= 0")
    return value


def _envelope_code(name: str, value: object) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or value in ("", 200, "200"):
        raise ConfigError(f"{name}: must be null or an error code (a string, or a number not 200)")
    return value


def _events(name: str, value: object) -> tuple[int | str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{name}: must be a list of statuses (integers) or {UNKNOWN_EVENTS!r}")
    for event in value:
        is_status = isinstance(event, int) and not isinstance(event, bool)
        if not is_status and event != UNKNOWN_EVENTS:
            raise ConfigError(f"{name}: {event!r} is not a status (integer) or {UNKNOWN_EVENTS!r}")
    return tuple(dict.fromkeys(value))


def _overrides(name: str, value: object) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: must be an object of clientReference (or '*') -> fields")
    out: dict[str, dict[str, str]] = {}
    for ref, fields in value.items():
        if not isinstance(fields, Mapping):
            raise ConfigError(f"{name}.{ref}: must be an object of field -> text")
        for key, text in fields.items():
            if key not in OVERRIDABLE:
                raise ConfigError(f"{name}.{ref}.{key}: field must be one of {list(OVERRIDABLE)}")
            if not isinstance(text, str):
                raise ConfigError(f"{name}.{ref}.{key}: must be a string (the exact text to send)")
        out[str(ref)] = dict(fields)
    return out


def _prefixes(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{name}: must be a list of clientReference prefixes ('' = all)")
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: every prefix must be a string")
    return tuple(dict.fromkeys(value))


_VALIDATORS: dict[str, Validator] = {
    "latency_ms": _non_negative,
    "error_rates": _error_rates,
    "retry_after_seconds": _non_negative,
    "lost_rate": _probability,
    "slow_rate": _probability,
    "slow_ms": _non_negative,
    "max_rps": _optional_positive,
    "fault_operations": _operations,
    "duplicate_mode": _choice("return", "reject", "new"),
    "confirm_mode": _choice("return", "reject"),
    "not_found_status": _not_found_status,
    "token_ttl_seconds": _positive,
    "processing_seconds": _non_negative,
    "unknown_status_seconds": _non_negative,
    "unknown_status_value": _unknown_status,
    "idempotency": _boolean,
    "webhook_url": _optional_url,
    "webhook_secret": _non_empty_str,
    "webhook_delay_ms": _non_negative,
    "webhook_jitter_ms": _non_negative,
    "webhook_duplicate_rate": _probability,
    "webhook_drop_rate": _probability,
    "webhook_max_attempts": _positive_int,
    "webhook_retry_base_ms": _non_negative,
    "webhook_timeout_seconds": _positive,
    "webhook_events": _events,
    "token_shape": _choice(*TOKEN_SHAPES),
    "webhook_event_type": _choice(*EVENT_TYPES),
    "webhook_code_msg": _boolean,
    "webhook_amounts_as_numbers": _boolean,
    "amounts_as_numbers": _boolean,
    "status_info": _boolean,
    "refund_overrides": _overrides,
    "confirm_async_seconds": _non_negative,
    "address_echo": _boolean,
    "other_refund_id": _prefixes,
    "complete_unconfirmed_seconds": _optional_positive,
    "not_found_lag_seconds": _non_negative,
    "token_refuse_status": _refuse_status,
    "trickle_bytes": _count,
    "trickle_interval_ms": _non_negative,
    "answer_size_bytes": _count,
    "endless_answer": _boolean,
    "envelope_error_code": _envelope_code,
    "envelope_error_msg": _non_empty_str,
}
