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
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from config.settings import Settings

PROVIDER_QUEUE = "refunds.provider"  # steps that call MCE: scale these workers with MCE's limit
TIMERS_QUEUE = "refunds.timers"  # the scheduler tick and bookkeeping: cheap, latency-sensitive
NOTIFY_QUEUE = "refunds.notify"  # outcome notifications to merchant apps (their endpoints' pace)
ALL_QUEUES = f"{PROVIDER_QUEUE},{TIMERS_QUEUE},{NOTIFY_QUEUE}"

TASK_MODULES = ["tasks.refunds", "tasks.schedule", "tasks.notifications"]

TASK_ROUTES = {
    "refunds.create": {"queue": PROVIDER_QUEUE},
    "refunds.confirm": {"queue": PROVIDER_QUEUE},
    "refunds.poll": {"queue": PROVIDER_QUEUE},
    "refunds.tick": {"queue": TIMERS_QUEUE},
    "notifications.deliver": {"queue": NOTIFY_QUEUE},
}


def celery_config(settings: Settings) -> dict[str, Any]:
    exchange = Exchange("refunds", type="direct")
    return {
        "broker_url": settings.redis_url,
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
        "broker_transport_options": {"visibility_timeout": 3600},
        "broker_connection_retry_on_startup": True,
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
        },
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery app with the pipeline's config; workers and producers build theirs here."""
    app = Celery("refunds", include=TASK_MODULES, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
