"""The yardstick: a bare Celery flow of the pipeline's shape, with none of its bookkeeping.

token -> POST create -> POST confirm -> countdown -> GET (again on a countdown until final). One
``requests.Session`` and one token per process, kept in memory; no ledger, no locks, no timers, no
pacing, no stats. Completions are counted in Redis (``bench:done``) so the benchmark can see the
end. ``bench.noop`` is the no-op task of the submit benchmark.

Celery settings: by default the reliability settings the pipeline's app uses (JSON only, late
acks, prefetch 1, task events on, as ``config/celery.py`` sets them), so a comparison measures the
pipeline's own work and not a different Celery configuration; ``BENCH_EVENTS=0`` turns the events
off to show what they cost.

Start a worker: ``celery -A bench.bare worker -Q bench.bare`` with ``BENCH_REDIS_URL``,
``BENCH_SANDBOX_URL`` and ``BENCH_POLL_SCHEDULE`` in the environment.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import redis
import requests
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SANDBOX_URL = os.environ.get("BENCH_SANDBOX_URL", "http://127.0.0.1:8099").rstrip("/")
POLL_SCHEDULE = [float(x) for x in os.environ.get("BENCH_POLL_SCHEDULE", "0.5").split(",")]
EVENTS = os.environ.get("BENCH_EVENTS", "1") == "1"
CLIENT_ID = os.environ.get("BENCH_CLIENT_ID", "sandbox-client-id")
CLIENT_SECRET = os.environ.get("BENCH_CLIENT_SECRET", "sandbox-client-secret")
QUEUE = "bench.bare"
DONE_KEY = "bench:done"
TOKEN_CALLS_KEY = "bench:token_calls"  # noqa: S105 - a key name
FINAL_STATUSES = frozenset({3, 4, 5})
TIMEOUT = (3.05, 10.0)

app = Celery("bench_bare", broker=REDIS_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_send_task_events=EVENTS,
    task_send_sent_event=EVENTS,
    task_default_queue=QUEUE,
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
)

_process: dict[str, Any] = {}


def _state() -> dict[str, Any]:
    """Per-process session, token and Redis client (rebuilt after the prefork fork)."""
    if _process.get("pid") != os.getpid():
        _process.clear()
        _process.update(
            pid=os.getpid(),
            http=requests.Session(),
            redis=redis.Redis.from_url(REDIS_URL),
            token=None,
        )
    return _process


def _token(refresh: bool = False) -> str:
    state = _state()
    if state["token"] is None or refresh:
        r = state["http"].post(
            SANDBOX_URL + "/v1.0/oauth/token",
            data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            timeout=TIMEOUT,
        )
        r.raise_for_status()
        state["token"] = r.json()["access_token"]
        state["redis"].incr(TOKEN_CALLS_KEY)
    return str(state["token"])


def _call(
    method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> dict[str, Any]:
    state = _state()
    for attempt in (1, 2):
        auth = {"Authorization": f"Bearer {_token(refresh=attempt == 2)}"}
        r = state["http"].request(
            method,
            SANDBOX_URL + path,
            headers={**(headers or {}), **auth},
            timeout=TIMEOUT,
            **kwargs,
        )
        if r.status_code == 401 and attempt == 1:
            continue
        r.raise_for_status()
        return dict(r.json()["data"])
    raise RuntimeError("unreachable")


def _done() -> None:
    _state()["redis"].incr(DONE_KEY)


def _key(operation: str, ref: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{operation}:{ref}"))


def _follow(ref: str, refund_id: str, status: int, polls: int) -> None:
    if status in FINAL_STATUSES:
        _done()
        return
    delay = POLL_SCHEDULE[min(polls, len(POLL_SCHEDULE) - 1)]
    get.apply_async((ref, refund_id, polls), countdown=delay)


_RETRY: dict[str, Any] = {
    "autoretry_for": (requests.RequestException,),
    "retry_backoff": 0.5,
    "max_retries": 20,
    "acks_late": True,
}


@app.task(name="bench.create", **_RETRY)  # type: ignore[untyped-decorator]
def create(ref: str, txn: str) -> None:
    data = _call(
        "POST",
        "/v1.0/payment/crypto/createCryptoRefund",
        json={"originalTransactionType": 1, "originalTransactionId": txn, "clientReference": ref},
        headers={"idempotency-key": _key("create", ref)},
    )
    confirm.apply_async((ref, data["cryptoRefundId"]))


@app.task(name="bench.confirm", **_RETRY)  # type: ignore[untyped-decorator]
def confirm(ref: str, refund_id: str) -> None:
    data = _call(
        "POST",
        "/v1.0/payment/crypto/confirmCryptoRefund",
        json={"cryptoRefundId": refund_id},
        headers={"idempotency-key": _key("confirm", ref)},
    )
    _follow(ref, refund_id, int(data["status"]), 0)


@app.task(name="bench.get", **_RETRY)  # type: ignore[untyped-decorator]
def get(ref: str, refund_id: str, polls: int) -> None:
    data = _call(
        "GET", "/v1.0/payment/crypto/getCryptoRefund", params={"cryptoRefundId": refund_id}
    )
    _follow(ref, refund_id, int(data["status"]), polls + 1)


@app.task(name="bench.noop", acks_late=True)  # type: ignore[untyped-decorator]
def noop(ref: str) -> None:
    """The submit benchmark's baseline: one message per intent, nothing else."""
