"""The one Settings object, read from the environment once at start and passed down.

The environment variable names of the provider and Redis settings (``REDIS_URL``, ``MCE_BASE_URL``,
``MCE_CLIENT_ID``, ``MCE_CLIENT_SECRET``, ``MCE_WEBHOOK_SECRET``) are a public interface: operators
put them in env files and compose files, so they never change. The timing knobs share the
``REFUNDS_`` prefix.

Two profiles: ``production`` (the default) refuses to start with a missing or placeholder secret,
because a pipeline that moves money must fail loudly at start, not at the first refund; ``sandbox``
fills in the sandbox simulator's credentials so the demo and the tests need no configuration.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.errors import ConfigError

SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret"  # noqa: S105 - the simulator's public dev credential
SANDBOX_WEBHOOK_SECRET = "sandbox-webhook-secret"  # noqa: S105 - same
SANDBOX_BASE_URL = "http://127.0.0.1:8099"

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


# The pipeline's own Celery queues (config/celery.py; tests/unit check the two lists agree). A
# notification task published to one of them would be taken by our own worker and rejected.
PIPELINE_QUEUES = frozenset({"refunds.provider", "refunds.timers", "refunds.notify"})
DEFAULT_NOTIFY_QUEUE = "merchant.notifications"
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


def _env(*names: str) -> Any:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Everything a process of the pipeline needs to know, validated at start."""

    model_config = SettingsConfigDict(
        env_prefix="REFUNDS_", extra="ignore", populate_by_name=True, frozen=True
    )

    profile: Literal["production", "sandbox"] = Field(
        "production", validation_alias=_env("REFUNDS_PROFILE", "profile")
    )

    # --- connections (public names) ---
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL", "redis_url")
    )
    # Redis Sentinel (issue 8): when both are set, every Redis client (Celery's broker, the ledger,
    # web, CLI, producer, Flower) asks these Sentinels for the current primary of the named master;
    # REDIS_URL then supplies only the data connection's username, password and database number.
    redis_sentinels: Annotated[list[tuple[str, int]], NoDecode] = Field(
        default_factory=list, validation_alias=_env("REDIS_SENTINELS", "redis_sentinels")
    )
    redis_sentinel_master: str | None = Field(
        None, validation_alias=_env("REDIS_SENTINEL_MASTER", "redis_sentinel_master")
    )
    redis_sentinel_password: SecretStr | None = Field(
        None, validation_alias=_env("REDIS_SENTINEL_PASSWORD", "redis_sentinel_password")
    )
    # Durability (issue 8 part 2): replicas that must confirm a write that cannot be redone
    # (intake, operator approve/retry/cancel) before the caller is answered; 0 = do not wait.
    min_replica_acks: int = Field(0, ge=0, le=16)
    replica_ack_timeout_ms: int = Field(500, ge=1, le=60_000)
    mce_base_url: str | None = Field(None, validation_alias=_env("MCE_BASE_URL", "mce_base_url"))
    mce_client_id: str | None = Field(None, validation_alias=_env("MCE_CLIENT_ID", "mce_client_id"))
    mce_client_secret: SecretStr | None = Field(
        None, validation_alias=_env("MCE_CLIENT_SECRET", "mce_client_secret")
    )
    mce_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("MCE_WEBHOOK_SECRET", "mce_webhook_secret")
    )

    # --- contract v2 (provider-contract.md 2, 3): where the provider is unsure, a setting ---
    mce_api_version: str = Field(
        "v1.0",
        pattern=r"^v[0-9]+(\.[0-9]+)*$",
        validation_alias=_env("MCE_API_VERSION", "mce_api_version"),
    )
    mce_token_path: str = Field(
        "/oauth/token",
        pattern=r"^/[A-Za-z0-9/_.-]*$",
        validation_alias=_env("MCE_TOKEN_PATH", "mce_token_path"),
    )
    mce_token_encoding: Literal["form", "json"] = Field(
        "form", validation_alias=_env("MCE_TOKEN_ENCODING", "mce_token_encoding")
    )
    mce_token_default_lifetime: float = Field(
        300.0,
        gt=0,
        le=86400,
        validation_alias=_env("MCE_TOKEN_DEFAULT_LIFETIME", "mce_token_default_lifetime"),
    )
    mce_participant_code: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        validation_alias=_env("MCE_PARTICIPANT_CODE", "mce_participant_code"),
    )

    # --- pacing: MCE's rate limit applies to our credentials, so to all workers together ---
    mce_max_rps: float | None = Field(
        None, gt=0, validation_alias=_env("MCE_MAX_RPS", "mce_max_rps")
    )
    pacing_max_wait: float = Field(0.25, ge=0, le=5)
    rate_limit_default_pause: float = Field(1.0, gt=0, le=60)

    # --- HTTP ---
    http_connect_timeout: float = Field(3.05, gt=0, le=60)
    http_read_timeout: float = Field(10.0, gt=0, le=120)

    # --- token: refresh ahead by a fraction of the lifetime, capped (contract section 3) ---
    token_refresh_fraction: float = Field(0.2, gt=0, lt=1)
    token_refresh_max_margin: float = Field(60.0, ge=0)
    token_lock_seconds: float = Field(15.0, gt=0)
    token_wait_seconds: float = Field(10.0, gt=0)

    # --- following a refund: delays between Gets, the last one repeats ---
    poll_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
    )

    # --- webhook-first polling (README "Polling and webhooks"): when MCE is set up to send its
    # webhook to this deployment's receiver, the first Get waits out the window in which the
    # webhook normally arrives, so polling is the safety net for a lost delivery, not the path.
    # Explicit, not derived from MCE_WEBHOOK_SECRET: every production deployment has a secret,
    # but only the merchant knows whether MCE's dashboard points the webhook at this receiver.
    webhooks_expected: bool = False
    webhook_grace_seconds: float = Field(30.0, gt=0, le=3600)

    # --- retries of transient errors: capped exponential backoff with full jitter ---
    retry_base_seconds: float = Field(0.5, gt=0)
    retry_max_seconds: float = Field(60.0, gt=0, le=60)
    # Deprecated (issue 11): give-up is time-based now. Still parsed so an old env file starts,
    # with a warning naming its replacement; nothing reads it.
    max_attempts: int | None = Field(None, ge=1)
    # How long a refund may keep failing transiently (since the first failure of its current
    # streak of failures) before it goes to needs_attention: seconds or a duration ("24h").
    give_up_after: float = Field(24 * 3600.0, gt=0)
    # A refund still in flight (not final, not held for approval, not needs_attention) this long
    # after intake raises the age alert: stats, /metrics and the health check say so.
    age_alert_after: float = Field(3600.0, gt=0)
    # A token endpoint refusing our credentials (401/403) pauses every provider call of the
    # cluster this long; one token call per pause probes whether they work again.
    auth_pause_seconds: float = Field(30.0, gt=0, le=3600)

    # Confirm right after a Create in the same task, under the same lock (one message, one lock
    # and two ledger writes fewer per refund), while the task's soft time limit leaves a whole
    # step's call budget; false: Confirm always goes out as a refunds.confirm task of its own.
    confirm_inline: bool = True

    # --- timers and leases ---
    tick_interval: float = Field(1.0, gt=0, le=60)
    tick_batch: int = Field(500, ge=1)
    lease_seconds: float = Field(90.0, gt=0)
    task_soft_time_limit: float = Field(45.0, gt=0)
    task_time_limit: float = Field(60.0, gt=0)
    # A running step's lock and its refund's timer stay this far ahead, renewed every third of it
    # by the step's heartbeat: a dead worker's refund is due again within about this long.
    step_lease_seconds: float = Field(6.0, ge=1, le=60)
    # "Dispatched, not started": a step message that has not started within this long (lost with
    # a worker that had reserved it, or waiting in a backlog) is sent again with a newer fence, the
    # older one becoming a no-op; each further unstarted dispatch doubles it (up to 16 times).
    dispatch_lease_seconds: float = Field(15.0, ge=1, le=3600)

    # --- approval policy (the rule is refunds.policy.Policy; these are its raw values) ---
    approval_thresholds: Annotated[dict[str, Decimal], NoDecode] = Field(default_factory=dict)
    held_poll_seconds: float = Field(3600.0, gt=0, le=86400)  # how often a held refund is read
    not_found_grace_seconds: float = Field(120.0, ge=0)  # a Get's not-found after Create: read lag

    # --- outcome notifications to merchant apps (either, both or none) ---
    notify_task: str | None = None  # a Celery task name, sent the outcome on the same broker
    # The queue the task channel publishes to: the merchant app's, never one our workers consume
    # (checked below), or our worker would take the message and reject it as an unknown task.
    notify_queue: str = DEFAULT_NOTIFY_QUEUE
    notify_publish_timeout: float = Field(5.0, gt=0, le=30)  # the broker must accept within this
    # Delivery (either channel) is retried with capped exponential backoff for this long after
    # the first failure, then the entry becomes a dead letter (refunds notifications dead/replay).
    notify_give_up_after: float = Field(24 * 3600.0, gt=0)
    notify_retry_base_seconds: float = Field(0.5, gt=0)
    notify_retry_max_seconds: float = Field(600.0, gt=0, le=3600)
    callback_url: str | None = None  # a signed HTTP POST of the outcome, at least once
    callback_secret: SecretStr | None = None
    callback_timeout: float = Field(5.0, gt=0, le=60)

    # --- web app ---
    api_key: SecretStr | None = Field(None, validation_alias=_env("REFUNDS_API_KEY", "api_key"))
    # Operator credentials (approve/retry/cancel over HTTP), never the intake key:
    # ``name:key,name:key`` -- the name is what the history and ``approvedBy`` record. The single
    # key form is one operator named ``operator``. Neither set: operator routes answer 403.
    operator_keys: SecretStr | None = Field(
        None, validation_alias=_env("REFUNDS_OPERATOR_KEYS", "operator_keys")
    )
    operator_api_key: SecretStr | None = Field(
        None, validation_alias=_env("REFUNDS_OPERATOR_API_KEY", "operator_api_key")
    )
    webhook_tolerance_seconds: float = Field(300.0, gt=0)
    # Every request body, webhooks included (413 above it); the old webhook-only name still works.
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        validation_alias=_env(
            "REFUNDS_MAX_BODY_BYTES", "REFUNDS_WEBHOOK_MAX_BODY_BYTES", "max_body_bytes"
        ),
    )

    # --- archive (refunds.archive: SQL is the record, Redis keeps what is hot) ---
    # SQLAlchemy URL of the archive: PostgreSQL in production, an SQLite file by default.
    database_url: str = "sqlite:///refunds-archive.db"
    # A final refund leaves Redis this long after it turned final, once archived ("7d", seconds).
    hot_retention: float = Field(7 * 24 * 3600.0, ge=0)
    archive_batch: int = Field(500, ge=1, le=10_000)  # queue entries per archiver transaction
    archive_interval: float = Field(1.0, gt=0, le=3600)  # seconds between beat's archive.drain

    # --- logs ---
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("mce_webhook_secret")
    @classmethod
    def _webhook_secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # In every profile: an empty key would make signatures anyone can compute.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "must not be empty or blank (it keys the HMAC that authenticates MCE's webhooks)"
            )
        return value

    @field_validator("mce_participant_code", mode="before")
    @classmethod
    def _blank_participant_is_none(cls, value: Any) -> Any:
        # ``MCE_PARTICIPANT_CODE=`` in an env file means "not configured", not "send it empty".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _parse_sentinels(cls, value: Any) -> Any:
        # host:port,host:port (IPv6 as [addr]:port); the format Sentinel deployments document
        if not isinstance(value, str):
            return value
        out = []
        for raw in value.split(","):
            part = raw.strip()
            if not part:
                continue
            host, sep, port = part.rpartition(":")
            host = host.strip().removeprefix("[").removesuffix("]")
            if not sep or not host or not port.strip().isdigit():
                raise ValueError(f"{part!r} is not host:port (use host:port,host:port)")
            out.append((host, int(port)))
        return out

    @field_validator("redis_sentinels")
    @classmethod
    def _check_sentinels(cls, value: list[tuple[str, int]]) -> list[tuple[str, int]]:
        for host, port in value:
            if not 0 < port < 65536:
                raise ValueError(f"port {port} of {host} is out of range")
        if len(set(value)) != len(value):
            raise ValueError("a Sentinel address is listed twice")
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _check_master(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip()
        if not name or any(c.isspace() for c in name):
            raise ValueError("must be a non-empty master name without spaces")
        return name

    @field_validator("notify_queue", mode="before")
    @classmethod
    def _blank_notify_queue_is_default(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return DEFAULT_NOTIFY_QUEUE
        return value.strip() if isinstance(value, str) else value

    @field_validator("notify_queue")
    @classmethod
    def _notify_queue_not_ours(cls, value: str) -> str:
        if value in PIPELINE_QUEUES:
            raise ValueError(
                f"{value!r} is one of the pipeline's own queues "
                f"({', '.join(sorted(PIPELINE_QUEUES))}): our workers would consume the "
                "notification and reject it as an unknown task;"
                f" use the merchant app's queue (default {DEFAULT_NOTIFY_QUEUE!r})"
            )
        return value

    @field_validator("give_up_after", "age_alert_after", "hot_retention", mode="before")
    @classmethod
    def _parse_durations(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("max_attempts")
    @classmethod
    def _max_attempts_deprecated(cls, value: int | None) -> int | None:
        if value is not None:
            warnings.warn(
                "REFUNDS_MAX_ATTEMPTS is deprecated and ignored: give-up is time-based now; "
                "set REFUNDS_GIVE_UP_AFTER (a duration such as 24h) instead",
                FutureWarning,  # shown by default: meant for the operator reading the log
                stacklevel=2,
            )
        return value

    @field_validator("poll_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("approval_thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: Any) -> Any:
        # JSON ({"USDT": "1000"}) or a short list (USDT=1000,BTC=0.05)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return {}
            if text.startswith("{"):
                return json.loads(text)
            pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("use CURRENCY=AMOUNT pairs separated by commas, or JSON")
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("approval_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        if any(v < 0 for v in value.values()):
            raise ValueError("thresholds must not be negative")
        return {k.upper(): v for k, v in value.items()}

    @field_validator("poll_schedule")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one delay")
        # Poll delays are durable timer due times, not Celery countdowns, so they may be long;
        # an hour keeps every refund looked at at least hourly.
        if any(v <= 0 or v > 3600 for v in value):
            raise ValueError("delays must be > 0 and <= 3600 seconds")
        return value

    @model_validator(mode="after")
    def _check_profile(self) -> Settings:
        """Every cross-field rule, in order; the first broken one stops start-up with one line."""
        if self.profile == "sandbox":
            self._fill_sandbox_credentials()
        else:
            self._require_production_credentials()
        self._check_callbacks()
        self._check_redis()
        self._check_timings()
        return self

    def _fill_sandbox_credentials(self) -> None:
        # The sandbox profile needs no configuration: fill in the simulator's credentials.
        fill: dict[str, Any] = {}
        if self.mce_base_url is None:
            fill["mce_base_url"] = SANDBOX_BASE_URL
        if self.mce_client_id is None:
            fill["mce_client_id"] = SANDBOX_CLIENT_ID
        if self.mce_client_secret is None:
            fill["mce_client_secret"] = SecretStr(SANDBOX_CLIENT_SECRET)
        if self.mce_webhook_secret is None:
            fill["mce_webhook_secret"] = SecretStr(SANDBOX_WEBHOOK_SECRET)
        for key, val in fill.items():
            object.__setattr__(self, key, val)

    def _require_production_credentials(self) -> None:
        problems = []
        if not self.mce_base_url:
            problems.append("MCE_BASE_URL is not set")
        if not self.mce_client_id:
            problems.append("MCE_CLIENT_ID is not set")
        for env_name, secret in (
            ("MCE_CLIENT_SECRET", self.mce_client_secret),
            ("MCE_WEBHOOK_SECRET", self.mce_webhook_secret),
        ):
            if secret is None:
                problems.append(f"{env_name} is not set")
            elif secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                problems.append(f"{env_name} is a placeholder value")
        if problems:
            raise ValueError(
                "; ".join(problems)
                + " (set them, or REFUNDS_PROFILE=sandbox to run against the simulator)"
            )

    def _check_callbacks(self) -> None:
        if self.callback_url and (
            self.callback_secret is None or not self.callback_secret.get_secret_value().strip()
        ):
            raise ValueError("REFUNDS_CALLBACK_URL needs REFUNDS_CALLBACK_SECRET to sign callbacks")
        if self.notify_retry_base_seconds > self.notify_retry_max_seconds:
            raise ValueError(
                "REFUNDS_NOTIFY_RETRY_BASE_SECONDS must not exceed REFUNDS_NOTIFY_RETRY_MAX_SECONDS"
            )
        # A delivery that Celery's soft limit interrupts leaves its entry to the lease (minutes).
        for name, seconds in (
            ("REFUNDS_CALLBACK_TIMEOUT", self.callback_timeout),
            ("REFUNDS_NOTIFY_PUBLISH_TIMEOUT", self.notify_publish_timeout),
        ):
            if seconds >= self.task_soft_time_limit:
                raise ValueError(f"{name} must be below REFUNDS_TASK_SOFT_TIME_LIMIT")

    def _check_redis(self) -> None:
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise ValueError(
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER must be set together "
                "(or neither, to use REDIS_URL directly)"
            )
        soft_ms = self.task_soft_time_limit * 1000
        if self.min_replica_acks and self.replica_ack_timeout_ms >= soft_ms:
            raise ValueError("REFUNDS_REPLICA_ACK_TIMEOUT_MS must be below the soft time limit")

    def _check_timings(self) -> None:
        # One provider call may need a token fetch first: two (connect + read) budgets, both
        # with the same timeouts, must end before the soft limit, or Celery interrupts a call
        # that was still allowed to wait (and the provider may apply what we gave up on).
        call = self.http_connect_timeout + self.http_read_timeout
        if 2 * call >= self.task_soft_time_limit:
            raise ValueError(
                "REFUNDS_HTTP_CONNECT_TIMEOUT + REFUNDS_HTTP_READ_TIMEOUT "
                f"({call:g} s, twice for a step that fetches a token first) must fit under "
                f"REFUNDS_TASK_SOFT_TIME_LIMIT ({self.task_soft_time_limit:g} s)"
            )
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("REFUNDS_TASK_SOFT_TIME_LIMIT must be below REFUNDS_TASK_TIME_LIMIT")
        if self.lease_seconds <= self.task_time_limit:
            raise ValueError(
                "REFUNDS_LEASE_SECONDS must exceed REFUNDS_TASK_TIME_LIMIT, or a slow task would "
                "see its refund handed to a second worker while it still runs"
            )
        if self.step_lease_seconds >= self.lease_seconds:
            raise ValueError("REFUNDS_STEP_LEASE_SECONDS must be below REFUNDS_LEASE_SECONDS")

    # --- derived values, kept here so every process computes them the same way ---

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

    def safe_summary(self) -> dict[str, Any]:
        """Settings as logs show them: secrets masked, URLs without passwords."""
        data = self.model_dump()
        for key in (
            "mce_client_secret",
            "mce_webhook_secret",
            "callback_secret",
            "api_key",
            "operator_keys",
            "operator_api_key",
            "redis_sentinel_password",
        ):
            data[key] = "**********" if data.get(key) is not None else None
        data["redis_url"] = _redact_url(self.redis_url)
        return data


def _redact_url(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment (plus overrides), or raise a readable ConfigError.

    Pydantic's own message includes the offending input values; for secrets that would print them,
    so the message is rebuilt from the field names and reasons only.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(msg if loc == "settings" else f"{loc.upper()}: {msg}")
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide Settings, built on first use (workers, beat, CLI)."""
    return load_settings()
