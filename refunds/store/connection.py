"""Redis clients for the store (built in ``config.redis_connection``) and the durability wait.

Writes that cannot be redone from the provider wait for replica acknowledgements here
(:func:`ensure_durable`); the client builder itself lives in ``config`` so Celery's configuration
can use it without importing the domain.
"""

from __future__ import annotations

import redis

from config.redis_connection import (
    broker_transport_options,
    broker_url,
    client_from_url,
    redis_client,
    sentinel,
)
from config.settings import Settings
from refunds.errors import NotDurableError
from refunds.store.keys import DURABILITY_PROBE

__all__ = [
    "broker_transport_options",
    "broker_url",
    "client_from_url",
    "ensure_durable",
    "redis_client",
    "sentinel",
]

def ensure_durable(client: redis.Redis, settings: Settings) -> None:
    """Wait until ``REFUNDS_MIN_REPLICA_ACKS`` replicas have every write made so far, or raise.

    Call after a write that cannot be redone from the provider (intake, operator approve / retry
    / cancel) and before answering the caller. Redis ``WAIT`` counts the replicas that have the
    writes of the connection it runs on, and a pooled client may run it on another connection
    than the write's; so one pipeline on one connection makes a tiny write of its own (INCR of a
    probe key) and then WAITs for it. Replication is one ordered stream, so a replica that has the
    probe has every write completed before it, ours included.

    No-op when the setting is 0 (the default: a single Redis behaves as before). Raises
    NotDurableError (fewer acks than required within ``REFUNDS_REPLICA_ACK_TIMEOUT_MS``), or the
    redis error of a primary that cannot be reached. Source: https://redis.io/commands/wait/
    """
    required = settings.min_replica_acks
    if required <= 0:
        return
    timeout_ms = settings.replica_ack_timeout_ms
    pipe = client.pipeline(transaction=False)
    pipe.incr(DURABILITY_PROBE)
    pipe.wait(required, timeout_ms)
    _, acked = pipe.execute()
    if int(acked) < required:
        raise NotDurableError(int(acked), required, timeout_ms)
