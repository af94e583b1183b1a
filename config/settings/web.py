"""The web app: the intake key, the operators' keys, the webhook's replay window and the body
limit. The keys themselves are checked when the app starts (``refunds.web.deps``), since only the
web app needs them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pydantic import AliasChoices, BaseModel, Field, SecretStr

from config.settings.common import Rule

if TYPE_CHECKING:
    from config.settings.model import Settings

#: The production ceiling of the webhook tolerance: the window in which a captured delivery can
#: be replayed; a few minutes cover any clock skew between MCE and us.
MAX_WEBHOOK_TOLERANCE_SECONDS = 600.0


class WebSettings(BaseModel):
    """Keys of the HTTP API, the webhook's timestamp tolerance, the request body limit."""

    api_key: SecretStr | None = Field(
        None,
        validation_alias="REFUNDS_API_KEY",
        description="the HTTP API's intake key, header X-API-Key (secret; the sandbox profile "
        "defaults to sandbox-api-key)",
    )
    # Operator credentials (approve/retry/cancel over HTTP), never the intake key:
    # ``name:key,name:key`` -- the name is what the history and ``approvedBy`` record.
    operator_keys: SecretStr | None = Field(
        None,
        validation_alias="REFUNDS_OPERATOR_KEYS",
        description="operator credentials, name:key,name:key; the name is recorded as who "
        "acted (secret)",
    )
    operator_api_key: SecretStr | None = Field(
        None,
        validation_alias="REFUNDS_OPERATOR_API_KEY",
        description="one operator key, recorded as operator (secret); with neither set, the "
        "operator routes answer 403",
    )
    # The console (/console, refunds/web/console): read-only keys (``name:key`` pairs like the
    # operator keys), the secret that signs its session cookies (unset outside the sandbox: the
    # console is off), how long a sign-in lasts, the cookie's Secure flag (unset: Secure outside
    # the sandbox profile) and a switch that makes the whole console read-only.
    viewer_keys: SecretStr | None = Field(
        None,
        validation_alias="REFUNDS_VIEWER_KEYS",
        description="the console's read-only keys, name:key,name:key (secret): a viewer sees "
        "every page and can act on nothing",
    )
    console_secret: SecretStr | None = Field(
        None,
        validation_alias="REFUNDS_CONSOLE_SECRET",
        description="signs the console's session cookies (secret; the same on every web process "
        "behind one address); unset outside the sandbox profile, the console is off",
    )
    console_session_seconds: float = Field(
        8 * 3600.0,
        ge=60,
        le=7 * 86400,
        validation_alias="REFUNDS_CONSOLE_SESSION_SECONDS",
        description="how long a console sign-in lasts, seconds",
    )
    console_secure_cookie: bool | None = Field(
        None,
        validation_alias="REFUNDS_CONSOLE_SECURE_COOKIE",
        description="the console cookie's Secure flag (unset: Secure outside the sandbox profile)",
    )
    console_read_only: bool = Field(
        False,
        validation_alias="REFUNDS_CONSOLE_READ_ONLY",
        description="makes the whole console read-only: every action is refused (403)",
    )
    metrics_token: SecretStr | None = Field(
        None,
        min_length=16,
        validation_alias="REFUNDS_METRICS_TOKEN",
        description="a bearer token /metrics asks for (Authorization: Bearer ...; 401 without "
        "it); unset: /metrics is open (secret)",
    )
    webhook_tolerance_seconds: float = Field(
        300.0,
        gt=0,
        validation_alias="REFUNDS_WEBHOOK_TOLERANCE_SECONDS",
        description="how old a webhook's signed timestamp may be, seconds (at most "
        f"{MAX_WEBHOOK_TOLERANCE_SECONDS:g} in production)",
    )
    # Every request body, webhooks included (413 above it); the old webhook-only name still works
    # (REFUNDS_MAX_BODY_BYTES wins when both are set).
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        validation_alias=AliasChoices("REFUNDS_MAX_BODY_BYTES", "REFUNDS_WEBHOOK_MAX_BODY_BYTES"),
        description="request body limit of every HTTP route, webhooks included (413 above it); "
        "REFUNDS_WEBHOOK_MAX_BODY_BYTES is its old name",
    )


def _webhook_tolerance_bounded(s: Settings) -> Iterator[str]:
    if s.profile == "production" and s.webhook_tolerance_seconds > MAX_WEBHOOK_TOLERANCE_SECONDS:
        yield (
            f"REFUNDS_WEBHOOK_TOLERANCE_SECONDS must be at most {MAX_WEBHOOK_TOLERANCE_SECONDS:g} "
            "in production (a captured webhook can be replayed within it)"
        )


RULES = (Rule(("profile", "webhook_tolerance_seconds"), _webhook_tolerance_bounded),)
