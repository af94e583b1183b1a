"""Redis: one URL, or Sentinels that name the current primary, and how durable a write must be.

``REDIS_URL`` and ``REDIS_SENTINELS``/``REDIS_SENTINEL_MASTER`` are public names. Outside the
sandbox profile one of them must be set: a pipeline that moves money never falls back to an
implicit Redis. The sandbox profile falls back to ``redis://127.0.0.1:6379/0``, and every process
says so on stderr (``config.settings.loading.implicit_redis_notice``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from config.settings.common import SANDBOX_REDIS_URL, Rule, check_url

if TYPE_CHECKING:
    from config.settings.model import Settings

REDIS_URL_EXAMPLE = "redis://HOST:6379/0"


class RedisSettings(BaseModel):
    """Where Redis is (a URL or Sentinels) and how many replicas confirm a durable write."""

    redis_url: str = Field(
        "",
        validation_alias="REDIS_URL",
        description="redis://[user:password@]host:port/db (or rediss://); required outside the "
        "sandbox profile unless Sentinels are set, where it supplies only the data "
        "connection's user, password and database",
    )
    # Redis Sentinel: when both are set, every Redis client (Celery's broker, the ledger, web,
    # CLI, producer, Flower) asks these Sentinels for the current primary of the named master.
    redis_sentinels: Annotated[list[tuple[str, int]], NoDecode] = Field(
        default_factory=list,
        validation_alias="REDIS_SENTINELS",
        description="Sentinel addresses, host:port,host:port (IPv6 as [addr]:port)",
    )
    redis_sentinel_master: str | None = Field(
        None,
        validation_alias="REDIS_SENTINEL_MASTER",
        description="the master name the Sentinels watch (set with REDIS_SENTINELS)",
    )
    redis_sentinel_password: SecretStr | None = Field(
        None,
        validation_alias="REDIS_SENTINEL_PASSWORD",
        description="the Sentinels' own password (secret)",
    )
    # Durability: replicas that must confirm a write that cannot be redone (intake, operator
    # approve/retry/cancel) before the caller is answered; 0 = do not wait.
    min_replica_acks: int = Field(
        0,
        ge=0,
        le=16,
        validation_alias="REFUNDS_MIN_REPLICA_ACKS",
        description="replicas that must confirm an intake or an operator's decision before it "
        "is answered (0: do not wait)",
    )
    replica_ack_timeout_ms: int = Field(
        500,
        ge=1,
        le=60_000,
        validation_alias="REFUNDS_REPLICA_ACK_TIMEOUT_MS",
        description="how long to wait for those replicas, milliseconds",
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: Any) -> Any:
        return "" if value is None else value.strip() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _url_is_redis(cls, value: str) -> str:
        # Celery's broker (kombu) and redis-py both take redis:// and rediss://; a malformed URL
        # is refused here, at start, not by a traceback from the first connection.
        if value:
            check_url(value, ("redis", "rediss"), REDIS_URL_EXAMPLE)
            path = urlsplit(value).path.strip("/")
            if path and not path.isdigit():  # never quoted: a malformed URL may hold a password
                raise ValueError(f"names a database that is not a number ({REDIS_URL_EXAMPLE})")
        return value

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


def fill_sandbox_redis(settings: Settings) -> bool:
    """The sandbox's implicit Redis when none is configured; True when it was filled in."""
    if settings.redis_url or settings.redis_sentinels or settings.redis_sentinel_master:
        return False
    object.__setattr__(settings, "redis_url", SANDBOX_REDIS_URL)
    return True


def _redis_is_configured(s: Settings) -> Iterator[str]:
    if s.profile != "sandbox" and not s.redis_url and not s.redis_sentinels:
        yield (
            "REDIS_URL is not set (or REDIS_SENTINELS with REDIS_SENTINEL_MASTER): outside the "
            "sandbox profile nothing falls back to a local Redis"
        )


def _sentinels_come_together(s: Settings) -> Iterator[str]:
    if bool(s.redis_sentinels) != bool(s.redis_sentinel_master):
        yield (
            "REDIS_SENTINELS and REDIS_SENTINEL_MASTER must be set together "
            "(or neither, to use REDIS_URL directly)"
        )


def _replica_wait_fits(s: Settings) -> Iterator[str]:
    if s.min_replica_acks and s.replica_ack_timeout_ms >= s.task_soft_time_limit * 1000:
        yield "REFUNDS_REPLICA_ACK_TIMEOUT_MS must be below the soft time limit"


RULES = (
    Rule(("profile", "redis_url", "redis_sentinels"), _redis_is_configured),
    Rule(("redis_sentinels", "redis_sentinel_master"), _sentinels_come_together),
    Rule(
        ("min_replica_acks", "replica_ack_timeout_ms", "task_soft_time_limit"), _replica_wait_fits
    ),
)
