"""The one place that builds Redis connections: a plain URL, or the current primary via Sentinel.

It lives in ``config`` (it knows settings, no domain) so that Celery's configuration and the
store share it; ``refunds.store.connection`` re-exports it beside the durability wait.

Every process of the pipeline (workers, beat, web, CLI, producer API, health probe) gets its Redis
client from :func:`redis_client`, and Celery's broker URL from :func:`broker_url`, so a Sentinel
deployment is configured once (``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTER``) and followed by all.

With Sentinel, redis-py's ``master_for`` client asks the Sentinels for the primary on each new
connection and drops its connections when a command meets a read-only replica or a refused socket,
so after a failover the next command (or the one retried by the caller) reaches the new primary
without a restart. Source: redis-py ``redis/sentinel.py`` (SentinelConnectionPool,
SentinelManagedConnection).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.retry import Retry
from redis.sentinel import Sentinel

from config.settings import Settings

# Sentinel and failover timings: a command against a dead primary must fail within seconds so the
# caller's retry reaches the new one (Sentinel's own down-after is usually 5-30 s).
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 30


class SentinelCredentials(CredentialProvider):
    """The Sentinel password as a redis-py credential provider, so it never shows in a repr.

    Celery's ``broker_transport_options`` can be printed (``celery inspect conf``, Flower's
    config page, debug logs); a plain ``{"password": ...}`` there would put the secret in them.
    """

    def __init__(self, password: str) -> None:
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        return (self._password,)

    def __repr__(self) -> str:
        return "SentinelCredentials(**********)"


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """The Sentinels' own clients: one try each (redis-py's default retries a refused connection
    about ten times with backoff, seconds per dead Sentinel before the next one is asked, often
    during the very incident that causes a failover). The data client keeps its retries."""
    kwargs: dict[str, Any] = {"socket_timeout": CONNECT_TIMEOUT, "retry": Retry(NoBackoff(), 0)}
    if settings.redis_sentinel_password is not None:
        kwargs["credential_provider"] = SentinelCredentials(
            settings.redis_sentinel_password.get_secret_value()
        )
    return kwargs


def _data_auth(settings: Settings) -> dict[str, Any]:
    """Username, password and db of the data connection, from REDIS_URL (its host is unused)."""
    parts = urlsplit(settings.redis_url)
    out: dict[str, Any] = {}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    path = parts.path.strip("/")
    out["db"] = int(path) if path.isdigit() else 0
    return out


def sentinel(settings: Settings) -> Sentinel:
    """A redis-py Sentinel for the configured Sentinels (auth: the Sentinel password)."""
    return Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs=_sentinel_kwargs(settings),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )


def redis_client(settings: Settings, *, decode_responses: bool = True) -> redis.Redis:
    """The pipeline's Redis client: the Sentinel-managed primary, or ``REDIS_URL`` as before.

    Returns a ``redis.Redis`` with its own connection pool (share one per process). With Sentinel
    the client follows failovers by itself; a command caught by one raises
    ``redis.ConnectionError`` / ``ReadOnlyError`` once, and the next one reaches the new primary.
    """
    if not settings.uses_sentinel:
        return redis.Redis.from_url(
            settings.redis_url,
            decode_responses=decode_responses,
            health_check_interval=HEALTH_CHECK_INTERVAL,
        )
    assert settings.redis_sentinel_master is not None  # noqa: S101 - uses_sentinel says so
    client: redis.Redis = sentinel(settings).master_for(
        settings.redis_sentinel_master,
        decode_responses=decode_responses,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        **_data_auth(settings),
    )
    return client


def broker_url(settings: Settings) -> str:
    """Celery's broker URL: REDIS_URL, or kombu's ``sentinel://h:p/db;sentinel://h:p/db`` list.

    The data password goes into each sentinel URL (kombu passes it to the primary's connection);
    the Sentinel password goes into ``broker_transport_options['sentinel_kwargs']`` as a
    credential provider (:func:`broker_transport_options`).
    Source: kombu ``transport/redis.py`` SentinelChannel.
    """
    if not settings.uses_sentinel:
        return settings.redis_url
    auth = _data_auth(settings)
    cred = ""
    if "password" in auth:
        user = quote(auth.get("username", ""), safe="")
        cred = f"{user}:{quote(auth['password'], safe='')}@"
    hosts = [f"[{h}]" if ":" in h else h for h, _ in settings.redis_sentinels]
    return ";".join(
        f"sentinel://{cred}{host}:{port}/{auth['db']}"
        for host, (_, port) in zip(hosts, settings.redis_sentinels, strict=True)
    )


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """The Sentinel part of Celery's ``broker_transport_options`` (empty without Sentinel)."""
    if not settings.uses_sentinel:
        return {}
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(settings),
    }
