"""What routes depend on, handed out with FastAPI's ``Depends``: settings, the process's Context
(ledger, stats), the Producer, the intake API-key check and the operator credential check.

Two kinds of caller, two kinds of key, both sent as ``X-API-Key``:

- merchant apps hold the intake key (``REFUNDS_API_KEY``): submit and read refunds;
- operators hold an operator key (``REFUNDS_OPERATOR_KEYS=name:key,name:key``, or the single
  ``REFUNDS_OPERATOR_API_KEY`` named ``operator``): approve, retry, cancel. The operator's name
  comes from the credential, never from the request body, so ``approvedBy`` and the history say
  who really acted. The intake key gets 403 on operator routes (the key that submitted a refund
  must not approve it); with no operator key configured every operator route answers 403.

``create_app`` puts one ``Services`` on ``app.state``; the functions here read it from the
request, so tests and the factory can build an app around any Settings and Context.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from pydantic import SecretStr

from config.settings import PLACEHOLDER_SECRETS, Settings
from refunds.context import Context
from refunds.errors import ConfigError
from refunds.participants.registry import IntakeKey, registry_of
from refunds.producer import Producer

SANDBOX_API_KEY = "sandbox-api-key"
#: The sandbox profile's published operator credential (name, key), as with ``SANDBOX_API_KEY``.
SANDBOX_OPERATOR = ("sandbox-operator", "sandbox-operator-key")
#: The operator name a lone ``REFUNDS_OPERATOR_API_KEY`` records.
SINGLE_OPERATOR_NAME = "operator"
NO_OPERATOR_KEY = (
    "operator routes are disabled: no operator credential is configured "
    "(set REFUNDS_OPERATOR_KEYS=name:key or REFUNDS_OPERATOR_API_KEY)"
)
INTAKE_KEY_REFUSED = "the intake API key cannot run operator actions; use an operator key"
#: Keys refused outside the sandbox profile: the settings' one list of placeholder secrets (it
#: includes the published sandbox keys above).
PLACEHOLDER_KEYS = PLACEHOLDER_SECRETS | {SANDBOX_API_KEY, SANDBOX_OPERATOR[1]}


@dataclass(frozen=True)
class Services:
    """One per app: built once at start."""

    settings: Settings
    context: Context
    producer: Producer
    api_key: str
    #: operator key -> operator name; empty: operator routes answer 403
    operator_keys: Mapping[str, str] = field(default_factory=dict)
    #: the registry's intake keys scoped to some participants (``[[intake_keys]]``)
    scoped_keys: tuple[IntakeKey, ...] = ()


#: What an intake key may see: None every refund, else these participants' only.
Scope = frozenset[str] | None


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


def operator_keys_of(settings: Settings, intake_key: str) -> dict[str, str]:
    """The operator credentials, key -> operator name, from ``REFUNDS_OPERATOR_KEYS``
    (``name:key`` pairs, comma-separated; the key may contain ``:``) and
    ``REFUNDS_OPERATOR_API_KEY`` (named ``operator``). The sandbox profile falls back to
    ``SANDBOX_OPERATOR`` when neither is set; elsewhere none configured is allowed (the routes
    answer 403).

    Raises ConfigError (no key in the message) for a malformed pair, an empty name or key, two
    names for one key, a key equal to the intake key, or a placeholder key outside the sandbox.
    """
    pairs = _parse_operator_keys(settings.operator_keys)
    if settings.operator_api_key is not None:
        pairs.append((SINGLE_OPERATOR_NAME, settings.operator_api_key.get_secret_value().strip()))
    if not pairs and settings.profile == "sandbox":
        pairs.append(SANDBOX_OPERATOR)
    keys: dict[str, str] = {}
    for name, key in pairs:
        _check_operator_key(name, key, intake_key, sandbox=settings.profile == "sandbox")
        if keys.get(key, name) != name:
            raise ConfigError("invalid configuration: two operator names share one key")
        keys[key] = name
    return keys


def _parse_operator_keys(value: SecretStr | None) -> list[tuple[str, str]]:
    """``(name, key)`` pairs of ``REFUNDS_OPERATOR_KEYS``, stripped, blank items skipped (a
    trailing comma is harmless). Only the first ``:`` separates, so a key may contain ``:``.

    Raises ConfigError for an item without ``:`` or with an empty name or key; the message
    never quotes the item, since it holds a key.
    """
    pairs: list[tuple[str, str]] = []
    if value is None:
        return pairs
    for item in value.get_secret_value().split(","):
        if not item.strip():
            continue
        name, sep, key = item.strip().partition(":")
        if not sep or not name.strip() or not key.strip():
            raise ConfigError(
                "invalid configuration: REFUNDS_OPERATOR_KEYS must be name:key pairs, "
                "comma-separated"
            )
        pairs.append((name.strip(), key.strip()))
    return pairs


def _check_operator_key(name: str, key: str, intake_key: str, *, sandbox: bool) -> None:
    """Refuse one operator key that is empty, equals the intake key (whoever submits must not
    approve), or is a placeholder outside the sandbox. Raises ConfigError naming the operator,
    never the key."""
    if not key:
        raise ConfigError("invalid configuration: an operator key is empty")
    if hmac.compare_digest(key.encode(), intake_key.encode()):
        raise ConfigError(
            f"invalid configuration: operator {name!r} has the intake key (REFUNDS_API_KEY); "
            "operator keys must differ from it"
        )
    if not sandbox and key.lower() in PLACEHOLDER_KEYS:
        raise ConfigError(f"invalid configuration: operator {name!r} has a placeholder key")


def scoped_keys_of(
    settings: Settings, api_key: str, operator_keys: Mapping[str, str]
) -> tuple[IntakeKey, ...]:
    """The registry's participant-scoped intake keys; ConfigError for one that is also the
    intake key or an operator key (a key must say who it is), or a placeholder outside the
    sandbox."""
    keys = registry_of(settings).intake_keys
    for scoped in keys:
        value = scoped.key.get_secret_value()
        if value == api_key or value in operator_keys:
            raise ConfigError(
                f"invalid configuration: intake key {scoped.name!r} of the registry is also "
                "REFUNDS_API_KEY or an operator key"
            )
        if settings.profile != "sandbox" and value in PLACEHOLDER_KEYS:
            raise ConfigError(
                f"invalid configuration: intake key {scoped.name!r} is a placeholder value"
            )
    return keys


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
) -> Scope:
    """401 unless ``X-API-Key`` is the intake key or a registry's scoped intake key (every key
    compared, each in constant time); the participants the key may see (None: all)."""
    if x_api_key is None:
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")
    sent = x_api_key.encode()
    scope: Scope = None
    matched = hmac.compare_digest(sent, svc.api_key.encode())
    for scoped in svc.scoped_keys:
        if hmac.compare_digest(sent, scoped.key.get_secret_value().encode()):
            matched, scope = True, scoped.participants
    if not matched:
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")
    return scope


def operator_name(
    svc: Annotated[Services, Depends(services)],
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    """The name of the operator whose key is ``X-API-Key``: the actor every operator action records.

    403 when no operator key is configured, or for the intake key; 401 for a missing or unknown
    key. Every configured key is compared, each in constant time, so the answer's timing does not
    say which key (or how much of one) matched.
    """
    if not svc.operator_keys:
        raise HTTPException(status_code=403, detail=NO_OPERATOR_KEY)
    if x_api_key is None:
        raise HTTPException(status_code=401, detail="missing X-API-Key (an operator key)")
    sent = x_api_key.encode()
    found: str | None = None
    for key, name in svc.operator_keys.items():
        if hmac.compare_digest(sent, key.encode()):
            found = name
    if found is not None:
        return found
    if hmac.compare_digest(sent, svc.api_key.encode()):
        raise HTTPException(status_code=403, detail=INTAKE_KEY_REFUSED)
    raise HTTPException(status_code=401, detail="wrong X-API-Key (not an operator key)")


SettingsDep = Annotated[Settings, Depends(settings)]
ContextDep = Annotated[Context, Depends(context)]
ProducerDep = Annotated[Producer, Depends(producer)]
SECURED = [Depends(require_api_key)]
ScopeDep = Annotated[Scope, Depends(require_api_key)]
OperatorDep = Annotated[str, Depends(operator_name)]
