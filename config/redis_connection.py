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

# Every client the pipeline builds carries these bounds explicitly, because redis-py's defaults
# differ by version (7.x: no socket timeout at all, so a frozen Redis, SIGSTOP or CLIENT PAUSE,
# holds a request forever; 8.x: 5 s), and kombu's own default is None (a publish waits forever).
# A command against a dead or frozen primary fails within SOCKET_TIMEOUT, so the caller answers
# 503 / exit 75 and a retry reaches the new primary after a failover (Sentinel's down-after is
# usually 5-30 s). No retry inside the client (redis-py's Redis() default is 10, timeouts
# included): a command that timed out or lost its connection may have run, and every retry adds
# a wait to the bound; the caller (a task's retry, MCE's redelivery, the merchant's resubmit)
# repeats the whole idempotent operation instead.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
HEALTH_CHECK_INTERVAL = 30


def command_timeout(settings: Settings) -> float:
    """The socket timeout of a data connection: SOCKET_TIMEOUT, or longer when a replica
    ``WAIT`` (``REFUNDS_REPLICA_ACK_TIMEOUT_MS``, ``store.connection.ensure_durable``) must fit
    inside it."""
    if settings.min_replica_acks <= 0:
        return SOCKET_TIMEOUT
    return max(SOCKET_TIMEOUT, settings.replica_ack_timeout_ms / 1000 + 1.0)


def bounded_retry() -> Retry:
    """No retry inside the client (see SOCKET_TIMEOUT), set explicitly: defaults vary by version."""
    return Retry(NoBackoff(), 0)


def client_options(settings: Settings) -> dict[str, Any]:
    """The bounds every data client gets (redis-py keyword arguments), whatever its version."""
    return _bounds(command_timeout(settings))


def client_from_url(url: str, *, decode_responses: bool = True) -> redis.Redis:
    """A client for a plain URL with the same bounds (tools and tests that have no Settings)."""
    return redis.Redis.from_url(url, decode_responses=decode_responses, **_bounds(SOCKET_TIMEOUT))


def _bounds(socket_timeout: float) -> dict[str, Any]:
    """Every client's bounds, with its command timeout: no client-side retry, a connect bound."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "retry": bounded_retry(),
        "retry_on_timeout": False,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }


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
    kwargs: dict[str, Any] = {
        "socket_timeout": CONNECT_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
    }
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
        socket_timeout=command_timeout(settings),
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
            settings.redis_url, decode_responses=decode_responses, **client_options(settings)
        )
    assert settings.redis_sentinel_master is not None  # noqa: S101 - uses_sentinel says so
    client: redis.Redis = sentinel(settings).master_for(
        settings.redis_sentinel_master,
        decode_responses=decode_responses,
        **client_options(settings),
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
    """Celery's ``broker_transport_options`` beyond the visibility timeout: the socket bounds
    (kombu's default is none, so a publish to a frozen Redis would wait forever; kombu's BRPOP
    waits 1 s, well inside them) and, with Sentinel, the master name and the Sentinels' own
    client options. Source: kombu ``transport/redis.py`` (Channel.from_transport_options)."""
    bounds: dict[str, Any] = {
        "socket_timeout": command_timeout(settings),
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    if not settings.uses_sentinel:
        return bounds
    return {
        **bounds,
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(settings),
    }
