"""MCE, the provider: where it is, our credentials, its contract's open points, and how we call it
(timeouts, pacing, the shared bearer token).

The names ``MCE_BASE_URL``, ``MCE_CLIENT_ID``, ``MCE_CLIENT_SECRET`` and ``MCE_WEBHOOK_SECRET`` are
a public interface: operators put them in env files and compose files, so they never change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from config.settings.common import (
    SANDBOX_BASE_URL,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_WEBHOOK_SECRET,
    Rule,
    check_url,
    is_loopback,
    is_placeholder,
)

if TYPE_CHECKING:
    from config.settings.model import Settings


class ProviderSettings(BaseModel):
    """MCE's address, our credentials, the contract's settings, timeouts, pacing and the token."""

    mce_base_url: str | None = Field(
        None,
        validation_alias="MCE_BASE_URL",
        description="MCE's API root, e.g. https://api.mce.example (https in production; the "
        "sandbox profile defaults to the simulator at http://127.0.0.1:8099)",
    )
    mce_client_id: str | None = Field(
        None, validation_alias="MCE_CLIENT_ID", description="our client id at MCE"
    )
    mce_client_secret: SecretStr | None = Field(
        None, validation_alias="MCE_CLIENT_SECRET", description="our client secret at MCE (secret)"
    )
    mce_webhook_secret: SecretStr | None = Field(
        None,
        validation_alias="MCE_WEBHOOK_SECRET",
        description="the key of MCE's webhook signatures (secret; never blank, in any profile)",
    )

    # --- contract v2 (provider-contract.md 2, 3): where the provider is unsure, a setting ---
    mce_api_version: str = Field(
        "v1.0",
        pattern=r"^v[0-9]+(\.[0-9]+)*$",
        validation_alias="MCE_API_VERSION",
        description="the path prefix of every call (v2.0 for the v2 docs' paths)",
    )
    mce_token_path: str = Field(
        "/oauth/token",
        pattern=r"^/[A-Za-z0-9/_.-]*$",
        validation_alias="MCE_TOKEN_PATH",
        description="Create Token's path under the version",
    )
    mce_token_encoding: Literal["form", "json"] = Field(
        "form",
        validation_alias="MCE_TOKEN_ENCODING",
        description="Create Token's body encoding: form or json",
    )
    mce_token_default_lifetime: float = Field(
        300.0,
        gt=0,
        le=86400,
        validation_alias="MCE_TOKEN_DEFAULT_LIFETIME",
        description="seconds a token is assumed to live when the token answer gives no lifetime",
    )
    mce_participant_code: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        validation_alias="MCE_PARTICIPANT_CODE",
        description="sent as participantCode in Create, Confirm and Get, only when set",
    )
    registry_file: str | None = Field(
        None,
        validation_alias="REFUNDS_REGISTRY_FILE",
        description="a PSP deployment's registry (TOML): its MCE credentials and participants "
        "(docs/participants.md); unset: one credential from MCE_*, one participant",
    )
    participant_hold_seconds: float = Field(
        2.0,
        gt=0,
        le=300,
        validation_alias="REFUNDS_PARTICIPANT_HOLD_SECONDS",
        description="how often a paused or disabled participant's waiting steps look again "
        "(seconds); their work waits on the timer, never lost",
    )

    # --- pacing: MCE's rate limit applies to our credentials, so to all workers together ---
    mce_max_rps: float | None = Field(
        None,
        gt=0,
        validation_alias="MCE_MAX_RPS",
        description="requests per second to MCE for the whole cluster together (unset: unpaced)",
    )
    pacing_max_wait: float = Field(
        0.25,
        ge=0,
        le=5,
        validation_alias="REFUNDS_PACING_MAX_WAIT",
        description="seconds a paced call may wait for its slot; longer and the step goes back "
        "on the timer",
    )
    rate_limit_default_pause: float = Field(
        1.0,
        gt=0,
        le=60,
        validation_alias="REFUNDS_RATE_LIMIT_DEFAULT_PAUSE",
        description="seconds the cluster pauses after a 429 without Retry-After",
    )

    # --- HTTP: a provider call ends within connect + read timeout, the whole answer included
    # (a total deadline, not a per-read timeout); an answer above the cap is refused unread ---
    http_connect_timeout: float = Field(
        3.05,
        gt=0,
        le=60,
        validation_alias="REFUNDS_HTTP_CONNECT_TIMEOUT",
        description="connect timeout of every MCE call, seconds",
    )
    http_read_timeout: float = Field(
        10.0,
        gt=0,
        le=120,
        validation_alias="REFUNDS_HTTP_READ_TIMEOUT",
        description="the budget for MCE's whole answer, seconds (with the connect timeout, one "
        "call's total deadline); twice connect + read must fit under REFUNDS_TASK_SOFT_TIME_LIMIT",
    )
    http_max_answer_bytes: int = Field(
        1 << 20,
        ge=1024,
        le=1 << 30,
        validation_alias="REFUNDS_HTTP_MAX_ANSWER_BYTES",
        description="the largest answer MCE may send, bytes; a larger one is a protocol error, "
        "refused unread (by its announced size) or cut off at the cap",
    )

    # --- token: refresh ahead by a fraction of the lifetime, capped (contract section 3) ---
    token_refresh_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        validation_alias="REFUNDS_TOKEN_REFRESH_FRACTION",
        description="refresh a token this fraction of its lifetime before it expires",
    )
    token_refresh_max_margin: float = Field(
        60.0,
        ge=0,
        validation_alias="REFUNDS_TOKEN_REFRESH_MAX_MARGIN",
        description="refresh at most this many seconds before expiry",
    )
    token_lock_seconds: float = Field(
        15.0,
        gt=0,
        validation_alias="REFUNDS_TOKEN_LOCK_SECONDS",
        description="the single-flight lock of a token refresh; in production it must outlast "
        "one token fetch (connect + read timeout)",
    )
    token_wait_seconds: float = Field(
        15.0,
        gt=0,
        validation_alias="REFUNDS_TOKEN_WAIT_SECONDS",
        description="how long a worker waits for another's token refresh; in production at "
        "least one token fetch (connect + read timeout)",
    )
    auth_pause_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        validation_alias="REFUNDS_AUTH_PAUSE_SECONDS",
        description="after MCE refuses our credentials, every provider call of the cluster "
        "pauses this long; one token call per pause probes",
    )

    @field_validator(
        "mce_base_url", "mce_client_id", "mce_participant_code", "registry_file", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # ``MCE_PARTICIPANT_CODE=`` in an env file means "not configured", not "send it empty".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mce_base_url")
    @classmethod
    def _base_url_is_a_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value.strip(), ("https", "http"), "https://api.mce.example")
            return value.strip()
        return value

    @field_validator("mce_webhook_secret")
    @classmethod
    def _webhook_secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # In every profile: an empty key would make signatures anyone can compute.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "must not be empty or blank (it keys the HMAC that authenticates MCE's webhooks)"
            )
        return value


def fill_sandbox_provider(settings: Settings) -> None:
    """The sandbox profile needs no configuration: the simulator's address and credentials."""
    fill: dict[str, Any] = {
        "mce_base_url": SANDBOX_BASE_URL,
        "mce_client_id": SANDBOX_CLIENT_ID,
        "mce_client_secret": SecretStr(SANDBOX_CLIENT_SECRET),
        "mce_webhook_secret": SecretStr(SANDBOX_WEBHOOK_SECRET),
    }
    for key, val in fill.items():
        if getattr(settings, key) is None:
            object.__setattr__(settings, key, val)


def _production_credentials(s: Settings) -> Iterator[str]:
    if s.profile != "production":
        return
    problems = []
    if not s.mce_base_url:
        problems.append("MCE_BASE_URL is not set")
    if not s.mce_client_id:
        problems.append("MCE_CLIENT_ID is not set")
    for env_name, secret in (
        ("MCE_CLIENT_SECRET", s.mce_client_secret),
        ("MCE_WEBHOOK_SECRET", s.mce_webhook_secret),
    ):
        if secret is None:
            problems.append(f"{env_name} is not set")
        elif is_placeholder(secret.get_secret_value()):
            problems.append(f"{env_name} is a placeholder value")
    if problems:
        yield (
            "; ".join(problems)
            + " (set them, or REFUNDS_PROFILE=sandbox to run against the simulator)"
        )


def _production_https(s: Settings) -> Iterator[str]:
    # Loopback stays allowed: a local TLS-terminating egress proxy, or the simulator in tests of
    # the production profile; nothing sent to it leaves the machine.
    url = s.mce_base_url
    plain = bool(url) and not str(url).lower().startswith("https://")
    if s.profile == "production" and plain and not is_loopback(str(url)):
        yield "MCE_BASE_URL must be https:// in production (the token and secrets travel on it)"


def _production_token_lock(s: Settings) -> Iterator[str]:
    if s.profile != "production":
        return
    fetch = s.http_connect_timeout + s.http_read_timeout
    budget = (
        f"one token fetch, REFUNDS_HTTP_CONNECT_TIMEOUT + REFUNDS_HTTP_READ_TIMEOUT ({fetch:g} s)"
    )
    if s.token_lock_seconds <= fetch:
        yield (
            f"REFUNDS_TOKEN_LOCK_SECONDS ({s.token_lock_seconds:g} s) must exceed {budget}: a lock "
            "that expires mid-fetch lets a second worker fetch too"
        )
    if s.token_wait_seconds < fetch:
        yield (
            f"REFUNDS_TOKEN_WAIT_SECONDS ({s.token_wait_seconds:g} s) must be at least {budget}: "
            "a worker would give up on a refresh still within its timeouts"
        )


RULES = (
    Rule(
        (
            "profile",
            "mce_base_url",
            "mce_client_id",
            "mce_client_secret",
            "mce_webhook_secret",
        ),
        _production_credentials,
    ),
    Rule(("profile", "mce_base_url"), _production_https),
    Rule(
        (
            "profile",
            "token_lock_seconds",
            "token_wait_seconds",
            "http_connect_timeout",
            "http_read_timeout",
        ),
        _production_token_lock,
    ),
)
