"""What routes depend on, handed out with FastAPI's ``Depends``: settings, the process's Context
(ledger, stats), the Producer, and the API-key check.

``create_app`` puts one ``Services`` on ``app.state``; the functions here read it from the
request, so tests and the factory can build an app around any Settings and Context.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from config.settings import Settings
from refunds.context import Context
from refunds.errors import ConfigError
from refunds.producer import Producer

SANDBOX_API_KEY = "sandbox-api-key"
PLACEHOLDER_KEYS = frozenset(
    {"", "changeme", "change-me", "placeholder", "secret", SANDBOX_API_KEY}
)


@dataclass(frozen=True)
class Services:
    """One per app: built once at start."""

    settings: Settings
    context: Context
    producer: Producer
    api_key: str


def api_key_of(settings: Settings) -> str:
    """The key callers must send; refuses to start without a real one outside the sandbox.

    Raises ConfigError for a missing key, or a placeholder one outside the sandbox profile.
    """
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value()
        if settings.profile != "sandbox" and key.strip().lower() in PLACEHOLDER_KEYS:
            raise ConfigError("invalid configuration: REFUNDS_API_KEY is a placeholder value")
        return key
    if settings.profile == "sandbox":
        return SANDBOX_API_KEY
    raise ConfigError("invalid configuration: REFUNDS_API_KEY is not set (the web app needs it)")


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def settings(svc: Annotated[Services, Depends(services)]) -> Settings:
    return svc.settings


def context(svc: Annotated[Services, Depends(services)]) -> Context:
    return svc.context


def producer(svc: Annotated[Services, Depends(services)]) -> Producer:
    return svc.producer


def require_api_key(
    svc: Annotated[Services, Depends(services)],
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """401 unless ``X-API-Key`` is the configured key (compared in constant time)."""
    if x_api_key is None or not hmac.compare_digest(
        x_api_key.encode(), svc.api_key.encode()
    ):
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")


SettingsDep = Annotated[Settings, Depends(settings)]
ContextDep = Annotated[Context, Depends(context)]
ProducerDep = Annotated[Producer, Depends(producer)]
SECURED = [Depends(require_api_key)]
