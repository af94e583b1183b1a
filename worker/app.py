"""The one Celery app: explicit task modules, the beat schedule, JSON logs.

Start a worker with ``celery -A worker.app worker`` and the scheduler with ``celery -A worker.app
beat`` (any number of them: one holds the beat lock and sends, the others stand by).
Configuration comes from the one Settings object (environment variables); a bad setting stops the
process at start with a one-line reason, before it touches a queue.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.concurrency import get_implementation
from celery.signals import (
    celeryd_init,
    heartbeat_sent,
    setup_logging,
    task_received,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from config.celery import make_celery
from config.settings import get_settings, implicit_redis_notice
from refunds.archive.db import require_current_schema
from refunds.errors import ConfigError
from refunds.ops import logs
from refunds.participants import registry_of
from refunds.store.connection import redis_client
from refunds.store.counters import flush_all
from refunds.store.epoch import EpochWatch
from refunds.store.workers import WorkerRegistry
from worker.liveness import Liveness

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


#: Pools that enforce no Celery time limit: a provider call stuck in one would hold its refund's
#: lease for ever (the heartbeat renews it while the step runs), so a worker refuses them.
_UNBOUNDED_POOLS = {"celery.concurrency.solo": "solo", "celery.concurrency.thread": "threads"}


@celeryd_init.connect
def _refuse_unbounded_pools(conf: Any = None, options: Any = None, **_: Any) -> None:
    """Stop at start, with one line, on a pool without time limits (``-P solo``, ``-P threads``):
    only prefork (and the green pools) enforce ``REFUNDS_TASK_TIME_LIMIT``."""
    given = options or {}
    # The CLI passes -P as ``pool`` (a class); ``pool_cls`` when built in code; else the config.
    chosen = given.get("pool") or given.get("pool_cls") or (conf.worker_pool if conf else None)
    pool = get_implementation(chosen) if chosen else None
    name = _UNBOUNDED_POOLS.get(getattr(pool, "__module__", ""))
    if name is not None:
        sys.stderr.write(
            f"refunds: the {name} pool enforces no task time limit, so a stuck provider call "
            "would hold its refund for ever; run the worker with the prefork pool (the default; "
            "drop -P/--pool, or use -P prefork)\n"
        )
        raise SystemExit(2)


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from installing its own handlers: every line is JSON.
    logs.configure(settings.log_level, settings.log_json)


@worker_init.connect
def _check_archive_schema(**_: Any) -> None:
    # A worker archives and reads the archive: a schema behind stops it (one line, exit 2).
    require_current_schema(settings.database_url)


@worker_process_shutdown.connect
def _flush_counters(**_: Any) -> None:
    # Pool processes leave through os._exit (no atexit): write the last second's call counts.
    flush_all()


# The worker's liveness beat (worker/liveness.py): started in the main process once the consumer
# is ready, told of each message as it is received, stopped (and its entry removed) at a clean
# shutdown. Beat and the CLI never start it: only a consuming worker holds messages.
_liveness: Liveness | None = None


@worker_ready.connect
def _start_liveness(sender: Any = None, **_: Any) -> None:
    global _liveness  # noqa: PLW0603 - one beat per worker process
    if _liveness is not None:  # the consumer was ready before (a reconnect): it still beats
        return
    hostname = str(getattr(sender, "hostname", None) or "worker")
    _liveness = Liveness(WorkerRegistry(redis_client(settings)), hostname)
    _liveness.start()


@task_received.connect
def _name_received(request: Any = None, **_: Any) -> None:
    if _liveness is not None:
        _liveness.received(request)


@worker_shutdown.connect
def _stop_liveness(**_: Any) -> None:
    if _liveness is not None:
        _liveness.stop()


_epoch: EpochWatch | None = None


@worker_ready.connect
@heartbeat_sent.connect
def _check_epoch(**_: Any) -> None:
    """The worker's main process reads the ledger's epoch at start and with each event heartbeat
    (every 2 s): a Redis restarted empty is logged at ERROR once and recorded for every process
    (refunds.store.epoch). Redis trouble here is the broker connection's to report."""
    global _epoch  # noqa: PLW0603 - one per worker process
    try:
        if _epoch is None:
            _epoch = EpochWatch(redis_client(settings), "worker")
        _epoch.check()
    except Exception:  # noqa: BLE001, S110 - never let a probe break the heartbeat
        pass
