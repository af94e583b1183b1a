"""A stand-in merchant app: its own Celery app, with the task the pipeline notifies outcomes to.

It shares only the broker with the pipeline (as a merchant app would), never its code: the task is
found by name (``merchant.refund_final``) on the merchant's own queue. Each outcome it receives is
appended, as JSON, to a Redis list the test reads. Run it as a real worker process, from the
repository root:

    MERCHANT_BROKER_URL=redis://... \
        python -m celery -A tests.integration.merchant_app worker -Q merchant
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery

TASK_NAME = "merchant.refund_final"
QUEUE = "merchant"
OUTCOMES_KEY = "merchant:outcomes"

# Imported by the test process only for the names above: "memory://" keeps it off any real Redis.
BROKER_URL = os.environ.get("MERCHANT_BROKER_URL", "memory://")

app = Celery("merchant", broker=BROKER_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER_URL)
    return _client


@app.task(name=TASK_NAME)
def refund_final(outcome: dict[str, Any]) -> None:
    """Record one outcome notification (the merchant's side of the contract)."""
    _redis().rpush(OUTCOMES_KEY, json.dumps(outcome, sort_keys=True))
