"""Celery configuration, derived from Settings: fixed, JSON-only, safe for at-least-once delivery.

Why each choice:
- JSON only: task arguments are ids, and pickle would let a broker write execute code.
- ``acks_late`` + ``reject_on_worker_lost``: a message is acknowledged after its step ran, so a
  worker killed mid-step leaves the message to be redelivered; steps are idempotent (ledger CAS and
  provider idempotency keys), which is what makes late acks safe.
- prefetch 1: a worker does not hoard messages it cannot start, which matters when it dies.
- events on: Flower shows tasks and workers.
- time limits: a step is one provider call with explicit timeouts; the hard limit stops a stuck one
  well before the refund's lease runs out.
- ``visibility_timeout`` far above any countdown we use (none is longer than a minute): on Redis, a
  message delayed past it would be handed to a second worker.
- Redis through Sentinel when configured (kombu's ``sentinel://`` transport with ``master_name``),
  built by refunds.store.connection like every other Redis client.
- ``broker_connection_max_retries=None``: Celery's default (100) makes a worker give up and exit
  after a long enough Redis outage; a worker must outlive any outage and resume by itself.
- :func:`guard_closed_broker_channels`: a kombu work-around, see its docstring (issue 8 / 11).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport import redis as kombu_redis

from config.redis_connection import broker_transport_options, broker_url
from config.settings import Settings

PROVIDER_QUEUE = "refunds.provider"  # steps that call MCE: scale these workers with MCE's limit
TIMERS_QUEUE = "refunds.timers"  # the scheduler tick and bookkeeping: cheap, latency-sensitive
NOTIFY_QUEUE = "refunds.notify"  # outcome notifications to merchant apps (their endpoints' pace)
ALL_QUEUES = f"{PROVIDER_QUEUE},{TIMERS_QUEUE},{NOTIFY_QUEUE}"

TASK_MODULES = ["tasks.refunds", "tasks.schedule", "tasks.notifications", "tasks.archive"]

TASK_ROUTES = {
    "refunds.create": {"queue": PROVIDER_QUEUE},
    "refunds.confirm": {"queue": PROVIDER_QUEUE},
    "refunds.poll": {"queue": PROVIDER_QUEUE},
    "refunds.tick": {"queue": TIMERS_QUEUE},
    "archive.drain": {"queue": TIMERS_QUEUE},
    "notifications.deliver": {"queue": NOTIFY_QUEUE},
}


def celery_config(settings: Settings) -> dict[str, Any]:
    exchange = Exchange("refunds", type="direct")
    return {
        "broker_url": broker_url(settings),
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_queues": [
            Queue(PROVIDER_QUEUE, exchange, routing_key=PROVIDER_QUEUE),
            Queue(TIMERS_QUEUE, exchange, routing_key=TIMERS_QUEUE),
            Queue(NOTIFY_QUEUE, exchange, routing_key=NOTIFY_QUEUE),
        ],
        "task_default_queue": PROVIDER_QUEUE,
        "task_default_exchange": "refunds",
        "task_default_routing_key": PROVIDER_QUEUE,
        "task_routes": TASK_ROUTES,
        "broker_transport_options": {
            "visibility_timeout": 3600,
            **broker_transport_options(settings),
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "refunds-tick": {
                "task": "refunds.tick",
                "schedule": settings.tick_interval,
                # A tick that waited longer than its interval is stale; the next one does its job.
                "options": {"expires": max(settings.tick_interval * 2, 1.0)},
            },
            # Redis -> SQL archive, and hot retention (refunds.archive); one round at a time.
            "archive-drain": {
                "task": "archive.drain",
                "schedule": settings.archive_interval,
                "options": {"expires": max(settings.archive_interval * 2, 1.0)},
            },
        },
    }


_GUARD_FLAG = "_refunds_closed_transport_guard"


def guard_closed_broker_channels() -> None:
    """Make kombu raise a connection error, not AttributeError, on a channel whose broker closed.

    Why (issue 8 part 3, issue 11): when Redis dies, Celery's consumer calls
    ``connection.collect()`` (celery/worker/consumer/consumer.py, ``on_connection_error_after_
    connected``). kombu then closes every channel of the transport
    (kombu/transport/virtual/base.py ``Transport.close_connection``); the Redis ``Channel.close``
    first drops its pools (kombu/transport/redis.py ``Channel.close`` -> ``_disconnect_pools``), and
    the virtual ``Channel.close`` then restores the unacked messages
    (``self._qos.restore_unacked_once()``) BEFORE ``self.connection.close_channel(self)``. With
    Redis down that restore raises ``redis.ConnectionError``, so the channel is never detached: it
    keeps ``channel.connection`` = the Transport, and the remaining channels are skipped. Then
    ``Connection._do_close_transport`` (kombu/connection.py) sets ``Transport.client = None``. The
    next use of that orphaned channel that needs a pool (a late ack or reject of a message it
    delivered, a restore, the async client) goes ``_create_client`` -> ``pool`` -> ``_get_pool``
    -> ``Channel._connparams``, whose first lines read ``conninfo = self.connection.client`` and
    ``conninfo.hostname`` (kombu/transport/redis.py, ``_connparams``), so it raises
    ``AttributeError: 'NoneType' object has no attribute 'hostname'``. kombu's
    ``Message.ack_log_error`` / ``reject_log_error`` and Celery's consumer only treat connection
    errors as recoverable, so the AttributeError escapes into the worker's event loop and the
    worker exits instead of reconnecting.

    The guard turns exactly that case (a channel whose transport has no client any more) into
    ``redis.ConnectionError``, which every caller already handles: the ack is logged as failed,
    the message stays in kombu's unacked index and is restored (by the worker's restore on the new
    connection or by the visibility timeout), and the steps are idempotent. Installed once per
    process; kombu 5.7.0 (the newest release) still has the code path.
    """
    channel_cls = kombu_redis.Channel
    if getattr(channel_cls, _GUARD_FLAG, False):
        return
    original = channel_cls._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or getattr(transport, "client", None) is None:
            raise redis.ConnectionError(
                "kombu channel of a closed broker connection (the worker reconnects)"
            )
        return original(self, asynchronous=asynchronous)

    channel_cls._connparams = _connparams  # type: ignore[method-assign]
    setattr(channel_cls, _GUARD_FLAG, True)


def make_celery(settings: Settings) -> Celery:
    """A Celery app with the pipeline's config; workers and producers build theirs here."""
    guard_closed_broker_channels()
    app = Celery("refunds", include=TASK_MODULES, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
