"""Building Settings at start: every broken rule in one message, or a ready Settings.

Pydantic reports every malformed field at once, but the cross-field rules run only once all
fields are valid, so a user would fix one round of problems only to meet the next. ``load_settings``
therefore validates a second time with the malformed fields at their defaults and the rules that
read them switched off, and reports the field errors and every other broken rule together.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from config.errors import ConfigError
from config.settings.common import UNUSABLE_FIELDS
from config.settings.model import Settings, env_names, redact_url


def _field_of(key: str) -> str | None:
    """The field a validation error's location names (an env name or a field name)."""
    for field, names in env_names().items():
        if key == field or key in names:
            return field
    return None


def _describe(err: ErrorDetails) -> str:
    # Pydantic's own message may include the offending input; for secrets that would print them,
    # so the message is rebuilt from the location and the reason only.
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = [str(p) for p in err["loc"]]
    if not loc:
        return msg
    field = _field_of(loc[0])
    name = env_names()[field][0] if field else f"{loc[0]} (not a setting)"
    return ".".join([name, *loc[1:]]) + f": {msg}"


def _rule_problems(overrides: dict[str, Any], bad: frozenset[str]) -> list[str]:
    """The broken cross-field rules that do not read a malformed field."""
    retry = {
        key: value
        for key, value in overrides.items()
        if _field_of(key) is not None and _field_of(key) not in bad
    }
    for field in bad:
        info = Settings.model_fields[field]
        retry[env_names()[field][0]] = info.get_default(call_default_factory=True)
    token = UNUSABLE_FIELDS.set(bad)
    try:
        Settings(**retry)
    except ValidationError as exc:
        return [_describe(e) for e in exc.errors(include_input=False) if not e["loc"]]
    finally:
        UNUSABLE_FIELDS.reset(token)
    return []


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (plus overrides), or raise one ConfigError that names
    every malformed setting and every broken rule, on one line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
    problems = [_describe(e) for e in errors]
    bad = frozenset(f for e in errors if e["loc"] and (f := _field_of(str(e["loc"][0]))))
    if len(problems) != sum(1 for e in errors if not e["loc"]):  # some field errors
        problems += [p for p in _rule_problems(overrides, bad) if p not in problems]
    raise ConfigError("invalid configuration: " + "; ".join(problems))


@functools.cache
def get_settings() -> Settings:
    """The process-wide Settings, built on first use (workers, beat, CLI)."""
    return load_settings()


def implicit_redis_notice(settings: Settings) -> str | None:
    """One line saying which Redis the sandbox profile fell back to, or None when configured."""
    if not settings.implicit_redis:
        return None
    return (
        f"notice: REDIS_URL is not set; the sandbox profile uses {redact_url(settings.redis_url)}"
    )
