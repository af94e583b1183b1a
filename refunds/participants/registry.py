"""The registry of a PSP deployment: its MCE credentials and the participants each one serves.

A TOML file (``REFUNDS_REGISTRY_FILE``), read and validated once at start. A bad file stops the
process with one message that lists every problem (``ConfigError``: exit 2), because a registry
that half-loads would send some merchants' refunds through the wrong login.

Secrets are never in the file: a credential names where its secret is (``env:NAME`` or
``file:/path``) and the secret is read from there at start, kept in process memory as a
``SecretStr``, never written to Redis, a log line or an error message.

Without a file the deployment has one credential (``MCE_*`` settings) and one participant
(``MCE_PARTICIPANT_CODE``, possibly none): :func:`single_registry`, whose credential id is None so
the store keeps its single-credential keys (``refunds.store.keys``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from config.settings import Settings, parse_currency_amounts
from refunds.errors import ConfigError

# An id goes into Redis keys, URL paths and metric labels: short, and no separators or globs.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
MAX_WEBHOOK_SECRETS = 2  # the current one and, during a rotation, the next


_Entry = TypeVar("_Entry", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CredentialEntry(_Strict):
    """One ``[[credentials]]`` table as written (secrets still references)."""

    id: str = Field(pattern=ID_PATTERN)
    base_url: str
    client_id: str = Field(min_length=1)
    client_secret: str
    webhook_secrets: list[str] = Field(min_length=1, max_length=MAX_WEBHOOK_SECRETS)
    max_rps: float | None = Field(None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.lower().startswith(("https://", "http://")) or "://" not in value[:9]:
            raise ValueError("must be an http(s):// URL, e.g. https://api.mce.example")
        return value.rstrip("/")


class ParticipantEntry(_Strict):
    """One ``[[participants]]`` table as written."""

    participant_code: str = Field(pattern=CODE_PATTERN)
    credential: str
    approval_thresholds: dict[str, Decimal] = Field(default_factory=dict)
    rules: str | list[str] | None = None  # a rules file or rule ids: read by KYT intake
    notify_url: str | None = None
    enabled: bool = True

    @field_validator("approval_thresholds", mode="before")
    @classmethod
    def _thresholds(cls, value: Any) -> Any:
        return parse_currency_amounts(value)


class IntakeKeyEntry(_Strict):
    """One ``[[intake_keys]]`` table: an HTTP intake key that sees only some participants."""

    name: str = Field(pattern=ID_PATTERN)
    key: str
    participants: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class IntakeKey:
    """A merchant app's key: it submits and reads only ``participants``' refunds."""

    name: str
    key: SecretStr = field(repr=False)
    participants: frozenset[str]


@dataclass(frozen=True)
class Credential:
    """One MCE login. ``id`` None: the deployment's one credential from the ``MCE_*`` settings."""

    id: str | None
    base_url: str | None
    client_id: str | None
    client_secret: SecretStr | None = field(repr=False)
    webhook_secrets: tuple[SecretStr, ...] = field(repr=False)
    max_rps: float | None


@dataclass(frozen=True)
class Participant:
    """One merchant served through a credential. ``code`` None: no participantCode is sent."""

    code: str | None
    credential: str | None
    approval_thresholds: Mapping[str, Decimal] | None = None  # None: REFUNDS_APPROVAL_*
    rules: str | tuple[str, ...] | None = None
    notify_url: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Registry:
    """Credentials by id and participants by code; ``from_file`` False for the single one."""

    credentials: Mapping[str | None, Credential]
    participants: Mapping[str | None, Participant]
    from_file: bool = False
    default: str | None = None  # the participant of intents that name none
    intake_keys: tuple[IntakeKey, ...] = ()

    def owner(self, code: str | None) -> str | None:
        """The participant a refund recorded with ``code`` belongs to (None: the default)."""
        return self.default if code is None else code

    def participant(self, code: str | None) -> Participant | None:
        return self.participants.get(code)

    def credential_of(self, code: str | None) -> Credential | None:
        part = self.participants.get(code)
        return None if part is None else self.credentials.get(part.credential)

    def codes_of(self, credential: str | None) -> frozenset[str | None]:
        """The participant codes served by ``credential``."""
        return frozenset(c for c, p in self.participants.items() if p.credential == credential)

    @property
    def codes(self) -> tuple[str, ...]:
        """Every configured participantCode (the bounded set of metric labels)."""
        return tuple(sorted(c for c in self.participants if c is not None))


def single_registry(settings: Settings) -> Registry:
    """Today's deployment: one credential from ``MCE_*``, one participant (maybe none)."""
    secrets = (settings.mce_webhook_secret,) if settings.mce_webhook_secret else ()
    cred = Credential(
        None,
        settings.mce_base_url,
        settings.mce_client_id,
        settings.mce_client_secret,
        secrets,
        settings.mce_max_rps,
    )
    code = settings.mce_participant_code
    return Registry({None: cred}, {code: Participant(code, None)}, default=code)


def resolve_secret(reference: str, where: str, problems: list[str]) -> SecretStr | None:
    """The secret a reference points at (``env:NAME`` or ``file:/path``); a problem otherwise.
    Messages name the reference, never the value."""
    kind, _, target = reference.partition(":")
    if kind == "env" and target:
        value = os.environ.get(target)
        if value is None or not value.strip():
            problems.append(f"{where}: environment variable {target} is not set or empty")
            return None
        return SecretStr(value.strip())
    if kind == "file" and target:
        path = Path(target)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{where}: cannot read {target} ({type(exc).__name__})")
            return None
        if not value:
            problems.append(f"{where}: {target} is empty")
            return None
        return SecretStr(value)
    problems.append(f"{where}: must be a reference, env:NAME or file:/path (never the secret)")
    return None


def _shape_problems(exc: ValidationError, where: str) -> list[str]:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(f"{where}{loc}: {msg}")
    return out


def _entries(
    raw: dict[str, Any], name: str, model: type[_Entry], problems: list[str]
) -> list[_Entry]:
    """The valid tables of array ``name``; each invalid one's problems added to ``problems``."""
    tables = raw.get(name)
    if not isinstance(tables, list) or not tables:
        problems.append(f"{name}: at least one [[{name}]] table is required")
        return []
    out = []
    for i, table in enumerate(tables):
        try:
            out.append(model.model_validate(table))
        except ValidationError as exc:
            problems.extend(_shape_problems(exc, f"{name}[{i}]"))
    return out


def parse_registry(text: str, source: str = "registry") -> Registry:
    """A registry from TOML text, or ConfigError listing every problem (one line each, joined):
    every malformed table and every broken reference, not only the first."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid registry {source}: not TOML ({exc})") from None
    problems: list[str] = [
        f"{key}: unknown field (expected credentials, participants, default_participant)"
        for key in raw
        if key not in {"credentials", "participants", "default_participant", "intake_keys"}
    ]
    credentials: dict[str | None, Credential] = {}
    for entry in _entries(raw, "credentials", CredentialEntry, problems):
        where = f"credentials ({entry.id})"
        if entry.id in credentials:
            problems.append(f"{where}: id {entry.id} is used twice")
        secret = resolve_secret(entry.client_secret, f"{where}.client_secret", problems)
        hooks = [
            resolve_secret(ref, f"{where}.webhook_secrets[{j}]", problems)
            for j, ref in enumerate(entry.webhook_secrets)
        ]
        credentials[entry.id] = Credential(
            entry.id,
            entry.base_url,
            entry.client_id,
            secret,
            tuple(h for h in hooks if h is not None),
            entry.max_rps,
        )
    participants: dict[str | None, Participant] = {}
    for part in _entries(raw, "participants", ParticipantEntry, problems):
        where = f"participants ({part.participant_code})"
        if part.participant_code in participants:
            problems.append(f"{where}: participant_code is used twice")
        if part.credential not in credentials:
            known = ", ".join(sorted(str(c) for c in credentials)) or "none valid"
            problems.append(f"{where}.credential: no credential {part.credential!r} ({known})")
        participants[part.participant_code] = Participant(
            part.participant_code,
            part.credential,
            {k.upper(): v for k, v in part.approval_thresholds.items()} or None,
            tuple(part.rules) if isinstance(part.rules, list) else part.rules,
            part.notify_url,
            part.enabled,
        )
    default = raw.get("default_participant")
    if default is not None and default not in participants:
        problems.append(f"default_participant: no participant {default!r}")
    keys = _intake_keys(raw, participants, problems) if "intake_keys" in raw else ()
    if problems:
        raise ConfigError(f"invalid registry {source}: " + "; ".join(problems))
    return Registry(credentials, participants, from_file=True, default=default, intake_keys=keys)


def _intake_keys(
    raw: dict[str, Any], participants: Mapping[str | None, Participant], problems: list[str]
) -> tuple[IntakeKey, ...]:
    out: list[IntakeKey] = []
    for entry in _entries(raw, "intake_keys", IntakeKeyEntry, problems):
        where = f"intake_keys ({entry.name})"
        if any(k.name == entry.name for k in out):
            problems.append(f"{where}: name {entry.name} is used twice")
        unknown = [c for c in entry.participants if c not in participants]
        if unknown:
            problems.append(f"{where}.participants: not in the registry: {', '.join(unknown)}")
        secret = resolve_secret(entry.key, f"{where}.key", problems)
        if secret is not None:
            if any(k.key.get_secret_value() == secret.get_secret_value() for k in out):
                problems.append(f"{where}.key: the same key as another intake key")
            out.append(IntakeKey(entry.name, secret, frozenset(entry.participants)))
    return tuple(out)


def load_registry(path: Path) -> Registry:
    """The registry in ``path``; ConfigError (exit 2) naming every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"invalid configuration: REFUNDS_REGISTRY_FILE {path} cannot be read "
            f"({type(exc).__name__})"
        ) from None
    return parse_registry(text, str(path))


_cache: dict[str, Registry] = {}


def registry_of(settings: Settings) -> Registry:
    """The registry file these settings name (read once per process), or the single one."""
    path = settings.registry_file
    if path is None:
        return single_registry(settings)
    found = _cache.get(path)
    if found is None:
        found = _cache[path] = load_registry(Path(path))
    return found


def intake_problem(registry: Registry, code: str | None) -> str | None:
    """Why an intent naming participant ``code`` (None: none) is refused, or None."""
    if code is None:
        if registry.from_file and registry.default is None and len(registry.participants) > 1:
            return "is required: the registry has several participants and no default_participant"
        return None
    part = registry.participants.get(code)
    if part is None:
        if not registry.from_file:
            known = registry.default
            return (
                f"must be {known} (MCE_PARTICIPANT_CODE)"
                if known
                else "is not accepted without a registry (REFUNDS_REGISTRY_FILE)"
            )
        return f"{code} is not a participant in the registry"
    if not part.enabled:
        return f"participant {code} is disabled in the registry"
    return None
