"""The one Celery app: explicit task modules, the beat schedule, JSON logs.

Start a worker with ``celery -A worker.app worker`` and the scheduler with ``celery -A worker.app
beat`` (any number of them: one holds the beat lock and sends, the others stand by).
Configuration comes from the one Settings object (environment variables); a bad setting stops the
process at start with a one-line reason, before it touches a queue.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.signals import setup_logging, worker_process_shutdown

from config.celery import make_celery
from config.settings import get_settings, implicit_redis_notice
from refunds.errors import ConfigError
from refunds.ops import logs
from refunds.participants import registry_of
from refunds.store.counters import flush_all

try:
    settings = get_settings()
    registry_of(settings)  # REFUNDS_REGISTRY_FILE, validated before the worker takes a task
except ConfigError as exc:
    sys.stderr.write(f"refunds: {exc}\n")
    raise SystemExit(2) from None
_notice = implicit_redis_notice(settings)
if _notice is not None:  # before Celery's banner: the sandbox's Redis is never a silent choice
    sys.stderr.write(f"refunds: {_notice}\n")

app = make_celery(settings)
# Only the holder of the Redis beat lock sends the tick: a second beat, or ``worker -B`` on every
# replica, stands by instead of doubling it (worker/beat.py).
app.conf.beat_scheduler = "worker.beat:LockedScheduler"


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from installing its own handlers: every line is JSON.
    logs.configure(settings.log_level, settings.log_json)


@worker_process_shutdown.connect
def _flush_counters(**_: Any) -> None:
    # Pool processes leave through os._exit (no atexit): write the last second's call counts.
    flush_all()
