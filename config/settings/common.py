"""What every group of settings shares: the cross-field rule type, durations, URL checks, and the
values the product refuses or fills in.

A rule is a check over several settings (``REFUNDS_TASK_SOFT_TIME_LIMIT`` below
``REFUNDS_TASK_TIME_LIMIT``). Each group declares its rules with the fields they read, so that
start-up can report every broken rule in one message: when a field's own value is malformed, the
rules that read it are skipped (their verdict would be about a value nobody set) and every other
rule still runs (``config.settings.loading``).
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from config.settings.model import Settings

SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105 - the simulator's public dev credential
SANDBOX_WEBHOOK_SECRET = "sandbox-webhook-secret"  # noqa: S105 - same
SANDBOX_BASE_URL = "http://127.0.0.1:8099"
#: The Redis the sandbox profile uses when neither REDIS_URL nor Sentinels are set; every process
#: says so on stderr (``implicit_redis_notice``), production never falls back to it.
SANDBOX_REDIS_URL = "redis://127.0.0.1:6379/0"

# Values people leave in env files by mistake; refusing them outside the sandbox is the point.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "placeholder",
        "secret",
        "xxx",
        "todo",
        "none",
        "null",
        "password",
        "replace-me",
        SANDBOX_CLIENT_SECRET,
        SANDBOX_WEBHOOK_SECRET,
        "sandbox-api-key",  # the published sandbox intake and operator keys (refunds.web.deps)
        "sandbox-operator-key",
    }
)


@dataclass(frozen=True)
class Rule:
    """A check over several settings: ``check`` yields one sentence per broken rule.

    ``fields`` are the settings it reads (field names): a rule is skipped when one of them is
    malformed, since its own error already names that setting.
    """

    fields: tuple[str, ...]
    check: Callable[[Settings], Iterator[str]]


#: Fields whose value was malformed in the first validation pass (see ``loading``).
UNUSABLE_FIELDS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "unusable_settings_fields", default=frozenset()
)


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"15m"``, ``"24h"``, ``"24 h"``, ``"1h30m"``, ``"2d"``.

    A bare number is seconds. Raises ValueError on anything else (an empty text, a unit we do not
    know, a negative number).
    """
    pos, total, parts = 0, 0.0, 0
    text = text.strip()
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None or match.end() == pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
        pos, parts = match.end(), parts + 1
    if not parts or pos != len(text):
        raise ValueError(f"not a duration: {text!r} (use seconds, or e.g. 90s, 15m, 24h, 2d)")
    return total


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def check_url(url: str, schemes: tuple[str, ...], example: str) -> None:
    """Raise ValueError unless ``url`` is ``scheme://host[:port]...`` with one of ``schemes``.

    The message never quotes the URL: a Redis URL carries its password. It names the scheme
    found (a scheme holds no secret), so ``http://`` for Redis reads as what it is.
    """
    found = _SCHEME.match(url)
    if found is None:
        raise ValueError(f"has no scheme; write it as {example}")
    scheme = found.group(1).lower()
    if scheme not in schemes:
        allowed = " or ".join(f"{s}://" for s in schemes)
        raise ValueError(f"uses {scheme}://, not {allowed} (e.g. {example})")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(f"has a malformed host or port (e.g. {example})") from None
    if not parts.hostname:
        raise ValueError(f"names no host (e.g. {example})")
    if port == 0:
        raise ValueError(f"has port 0 (e.g. {example})")


def is_loopback(url: str) -> bool:
    """True when the URL's host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_placeholder(secret: str) -> bool:
    """A value left in an env file by mistake (or a published sandbox credential)."""
    return secret.strip().lower() in PLACEHOLDER_SECRETS
