"""Who is at the console: sign-in with a key, a signed expiring session cookie, roles and CSRF.

An operator key (``REFUNDS_OPERATOR_KEYS`` / ``REFUNDS_OPERATOR_API_KEY``, the same credentials as
the operator routes) signs in as an *operator*, who may act; a viewer key (``REFUNDS_VIEWER_KEYS``)
signs in as a *viewer*, who sees everything and acts on nothing. The key is sent once, in the
sign-in form; the cookie then carries the name, the role, a per-session CSRF token and a keyed
fingerprint of the key, signed with ``REFUNDS_CONSOLE_SECRET`` by itsdangerous (the signer of
Starlette's SessionMiddleware) with its time, so a cookie older than
``REFUNDS_CONSOLE_SESSION_SECONDS`` is refused. A key removed from the configuration ends the
sessions it opened at their next request (its fingerprint no longer matches a configured key).

The cookie is HttpOnly, SameSite=Strict, scoped to ``/console`` and Secure unless configured off
(``REFUNDS_CONSOLE_SECURE_COOKIE``; the sandbox profile defaults to off for plain-HTTP demos).
Every POST must carry the session's CSRF token as the form field ``csrf_token``: compared in
constant time, refused with 403 before anything is read or written.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import SecretStr

from config.settings import Settings
from refunds.errors import ConfigError

Role = Literal["operator", "viewer"]
COOKIE = "refunds_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
_SALT = "refunds.console.session"
#: Without a secret outside the sandbox the console is off, and its pages say why.
NO_SECRET = (
    "the console is off: set REFUNDS_CONSOLE_SECRET (a long random string) to sign its sessions"  # noqa: S105
)


@dataclass(frozen=True)
class Session:
    """One signed-in person: the name their key is configured under, their role, the session's
    CSRF token and a one-shot message for the next page (``flash``, ``flash_kind``)."""

    name: str
    role: Role
    csrf: str
    key_fp: str
    flash: str = ""
    flash_kind: str = "ok"
    #: When the person signed in (epoch seconds). The session ends REFUNDS_CONSOLE_SESSION_SECONDS
    #: after it, however often the cookie is re-signed for a message in between (no sliding).
    issued: float = field(default_factory=time.time)

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


def parse_viewer_keys(value: SecretStr | None) -> list[tuple[str, str]]:
    """``(name, key)`` pairs of ``REFUNDS_VIEWER_KEYS`` (``name:key``, comma-separated; blank
    items skipped). Raises ConfigError for a malformed item; the message never quotes it."""
    pairs: list[tuple[str, str]] = []
    if value is None:
        return pairs
    for item in value.get_secret_value().split(","):
        if not item.strip():
            continue
        name, sep, key = item.strip().partition(":")
        if not sep or not name.strip() or not key.strip():
            raise ConfigError(
                "invalid configuration: REFUNDS_VIEWER_KEYS must be name:key pairs, comma-separated"
            )
        pairs.append((name.strip(), key.strip()))
    return pairs


class ConsoleAuth:
    """The console's credentials and cookie signer, built once per app (``install``).

    ``secret`` None: the console is off (every page answers 503 naming the setting).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        intake_key: str,
        operator_keys: Mapping[str, str],
        placeholder_keys: frozenset[str],
    ) -> None:
        sandbox = settings.profile == "sandbox"
        secret = settings.console_secret.get_secret_value() if settings.console_secret else None
        if secret is None and sandbox:
            secret = secrets.token_urlsafe(32)  # sandbox: sessions last as long as the process
        self.enabled = secret is not None
        self._secret = (secret or "").encode()
        self._signer = URLSafeTimedSerializer(secret or "off", salt=_SALT)
        self.max_age = settings.console_session_seconds
        self.read_only = settings.console_read_only
        secure = settings.console_secure_cookie
        self.secure_cookie = (not sandbox) if secure is None else secure
        self._keys: dict[str, tuple[str, Role]] = {
            key: (name, "operator") for key, name in operator_keys.items()
        }
        for name, key in parse_viewer_keys(settings.viewer_keys):
            if key in self._keys or hmac.compare_digest(key.encode(), intake_key.encode()):
                raise ConfigError(
                    f"invalid configuration: viewer {name!r} has the intake key or an operator "
                    "key; viewer keys must differ from both"
                )
            if not sandbox and key.lower() in placeholder_keys:
                raise ConfigError(f"invalid configuration: viewer {name!r} has a placeholder key")
            self._keys[key] = (name, "viewer")
        self._by_fp = {self._fingerprint(k): who for k, who in self._keys.items()}

    def _fingerprint(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:32]

    def sign_in(self, key: str) -> Session | None:
        """The session a key opens, or None for a key that is no console key. Every configured
        key is compared, each in constant time, so timing does not tell which one matched."""
        sent = key.strip().encode()
        found: tuple[str, str, Role] | None = None
        for candidate, (name, role) in self._keys.items():
            if hmac.compare_digest(sent, candidate.encode()):
                found = (candidate, name, role)
        if found is None or not sent:
            return None
        candidate, name, role = found
        return Session(name, role, secrets.token_urlsafe(24), self._fingerprint(candidate))

    def dump(self, session: Session) -> str:
        """The cookie's value: the session, signed with its time."""
        return str(
            self._signer.dumps(
                {
                    "n": session.name,
                    "r": session.role,
                    "c": session.csrf,
                    "k": session.key_fp,
                    "f": session.flash,
                    "fk": session.flash_kind,
                    "i": session.issued,
                }
            )
        )

    def load(self, cookie: str | None) -> Session | None:
        """The session of a cookie: None when absent, forged, expired, or opened by a key that is
        no longer configured (or whose role changed)."""
        if not cookie or not self.enabled:
            return None
        try:
            data = self._signer.loads(cookie, max_age=int(self.max_age))
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(data, dict):
            return None
        issued = data.get("i")
        if not isinstance(issued, int | float) or time.time() - float(issued) > self.max_age:
            return None  # the sign-in itself is too old: re-signing a cookie never extends it
        who = self._by_fp.get(str(data.get("k", "")))
        if who is None or who != (data.get("n"), data.get("r")):
            return None
        return Session(
            name=who[0],
            role=who[1],
            csrf=str(data.get("c", "")),
            key_fp=str(data["k"]),
            flash=str(data.get("f", "")),
            flash_kind=str(data.get("fk", "ok")),
            issued=float(issued),
        )


def csrf_ok(session: Session, sent: str | None) -> bool:
    """The form's token is the session's (constant time); an empty one never matches."""
    return (
        bool(sent)
        and bool(session.csrf)
        and hmac.compare_digest(str(sent).encode(), session.csrf.encode())
    )
