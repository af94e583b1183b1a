"""The one Settings object: every group of settings in one flat, frozen model.

Each group (provider, Redis, timing, approvals, notifications, web) is a mixin in its own module
with its fields, their validators and its cross-field rules; ``Settings`` composes them, adds the
process-wide fields (profile, logs), and runs every group's rules after the fields validate.
Callers keep reading ``settings.tick_interval``: the grouping is for the reader of this package.

Every field is read from exactly one documented environment name (``validation_alias``),
case-sensitively: no unprefixed fallback (a bare ``API_KEY`` or ``PROFILE`` from another service
is not ours), no case folding (``refunds_profile`` is not ``REFUNDS_PROFILE``). Python callers pass
field names (``load_settings(profile="sandbox")``).

Two profiles: ``production`` (the default) refuses to start with a missing or placeholder secret,
because a pipeline that moves money must fail loudly at start, not at the first refund; ``sandbox``
fills in the sandbox simulator's credentials so the demo and the tests need no configuration.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.settings import (
    approvals,
    archive,
    kyt,
    notifications,
    provider,
    redis,
    timing,
    web,
)
from config.settings.common import UNUSABLE_FIELDS, Rule

#: Every cross-field rule, in the order their sentences appear in the one start-up message.
RULES: tuple[Rule, ...] = (
    *provider.RULES,
    *redis.RULES,
    *web.RULES,
    *notifications.RULES,
    *timing.RULES,
)

_SECRET_FIELDS = (
    "mce_client_secret",
    "mce_webhook_secret",
    "callback_secret",
    "api_key",
    "operator_keys",
    "operator_api_key",
    "viewer_keys",
    "console_secret",
    "metrics_token",
    "redis_sentinel_password",
)


class DocumentedNamesOnly(EnvSettingsSource):
    """The environment, read by each field's documented name only.

    ``populate_by_name`` lets Python callers pass field names (``profile="sandbox"``); on the
    environment it would also read a variable named like the field (``api_key``, ``profile``),
    which is how another service's variable became our intake key. Here it is off.
    """

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.config = {**self.config, "populate_by_name": False, "validate_by_name": False}


# Listed last-group-first: pydantic orders fields from the last base to the first, so
# ``Settings.model_fields`` (and the generated configuration reference) reads provider first.
GROUPS: dict[str, type[BaseModel]] = {
    "provider": provider.ProviderSettings,
    "redis": redis.RedisSettings,
    "timing": timing.TimingSettings,
    "approvals": approvals.ApprovalSettings,
    "notifications": notifications.NotificationSettings,
    "web": web.WebSettings,
    "archive": archive.ArchiveSettings,
    "kyt": kyt.KytSettings,
}


class Settings(
    archive.ArchiveSettings,
    kyt.KytSettings,
    web.WebSettings,
    notifications.NotificationSettings,
    approvals.ApprovalSettings,
    timing.TimingSettings,
    redis.RedisSettings,
    provider.ProviderSettings,
    BaseSettings,
):
    """Everything a process of the pipeline needs to know, validated at start."""

    model_config = SettingsConfigDict(
        case_sensitive=True, populate_by_name=True, extra="forbid", frozen=True
    )

    profile: Literal["production", "sandbox"] = Field(
        "production",
        validation_alias="REFUNDS_PROFILE",
        description="production (the default: real credentials required) or sandbox (the "
        "simulator's credentials filled in); only this name changes it",
    )
    log_level: str = Field(
        "INFO",
        validation_alias="REFUNDS_LOG_LEVEL",
        description="the log level of every process (DEBUG, INFO, WARNING, ...)",
    )
    log_json: bool = Field(
        True,
        validation_alias="REFUNDS_LOG_JSON",
        description="one JSON object per log line (false: plain text for a terminal)",
    )

    _implicit_redis: bool = PrivateAttr(False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment by documented names; no .env file, no secrets dir."""
        return (init_settings, DocumentedNamesOnly(settings_cls))

    @model_validator(mode="after")
    def _check_rules(self) -> Settings:
        """Fill in the sandbox's defaults, then run every rule and report all broken ones."""
        skip = UNUSABLE_FIELDS.get()
        if self.profile == "sandbox" and "profile" not in skip:
            provider.fill_sandbox_provider(self)
            if not skip & {"redis_url", "redis_sentinels", "redis_sentinel_master"}:
                self._implicit_redis = redis.fill_sandbox_redis(self)
        problems = [
            problem
            for rule in RULES
            if not skip.intersection(rule.fields)
            for problem in rule.check(self)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived values, kept here so every process computes them the same way ---

    @property
    def implicit_redis(self) -> bool:
        """True when the sandbox profile fell back to its local Redis (nothing configured)."""
        return self._implicit_redis

    @property
    def dispatch_lease(self) -> float:
        """The "dispatched, not started" lease in seconds: REFUNDS_DISPATCH_LEASE_SECONDS, never
        longer than REFUNDS_LEASE_SECONDS."""
        return min(self.dispatch_lease_seconds, self.lease_seconds)

    @property
    def base_url(self) -> str:
        assert self.mce_base_url is not None  # noqa: S101 - guaranteed by the validator
        return self.mce_base_url.rstrip("/")

    def api_url(self, tail: str) -> str:
        """``{base}/{version}{tail}``: the version is one setting, the tails are constants."""
        return f"{self.base_url}/{self.mce_api_version}{tail}"

    @property
    def client_secret(self) -> SecretStr:
        assert self.mce_client_secret is not None  # noqa: S101
        return self.mce_client_secret

    @property
    def webhook_secret(self) -> SecretStr:
        assert self.mce_webhook_secret is not None  # noqa: S101
        return self.mce_webhook_secret

    @property
    def uses_sentinel(self) -> bool:
        """True when Redis is reached through Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER)."""
        return bool(self.redis_sentinels and self.redis_sentinel_master)

    @property
    def http_timeout(self) -> tuple[float, float]:
        return (self.http_connect_timeout, self.http_read_timeout)

    @property
    def http_deadline(self) -> float:
        """Seconds one provider call may take in all: connect, send, and the whole answer."""
        return self.http_connect_timeout + self.http_read_timeout

    def safe_summary(self) -> dict[str, Any]:
        """Settings as logs show them: secrets masked, URLs without passwords."""
        data = self.model_dump()
        for key in _SECRET_FIELDS:
            data[key] = "**********" if data.get(key) is not None else None
        data["redis_url"] = redact_url(self.redis_url)
        data["database_url"] = redact_url(self.database_url)
        return data


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (the user name stays: it is not secret)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


def groups() -> dict[str, list[str]]:
    """Concern -> its field names, in declaration order ("process": profile and logs)."""
    out = {name: list(group.model_fields) for name, group in GROUPS.items()}
    grouped = {field for fields in out.values() for field in fields}
    out["process"] = [field for field in Settings.model_fields if field not in grouped]
    return out


def env_names() -> dict[str, tuple[str, ...]]:
    """Field name -> the environment names it is read from (the first is the documented one)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            out[name] = (alias,)
        elif alias is not None:
            out[name] = tuple(str(choice) for choice in alias.choices)  # type: ignore[union-attr]
    return out
