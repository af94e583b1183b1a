"""Benchmark 5: bulk submit rate from one producer process.

``Producer.submit_many`` (chunks of 1,000) against raw Celery ``apply_async`` of a no-op task to
the same Redis broker, the same count, from this one process, nothing consuming meanwhile. The
intents are validated ``RefundIntent`` objects built before the clock starts (``submit_many``
takes validated intents; building them is timed separately). The raw baseline is a minimal Celery
app with Celery's defaults (JSON, no task-sent events), sending one message per intent: plain
``apply_async`` (what a merchant app would write), and with one producer held for the whole loop.
"""

from __future__ import annotations

import time

from bench import bare
from bench.common import Figure, Plan, Result, at_least, chunks, intents, refs
from bench.stack import BenchStack, sandbox_config
from refunds.producer import Producer


def submit(stack: BenchStack, plan: Plan) -> Result:
    n = plan.submit_intents
    stack.clean(**sandbox_config())
    names = refs("sub-", n)
    producer = Producer(stack.settings())
    producer.ledger.ping()

    started = time.perf_counter()
    batch = intents(names)
    build_seconds = time.perf_counter() - started

    started = time.perf_counter()
    created = 0
    for part in chunks(batch, 1000):
        created += len(producer.submit_many(part).created)
    pipeline_seconds = time.perf_counter() - started

    bare.app.conf.broker_url = stack.redis_url
    bare.app.conf.task_send_sent_event = False
    bare.app.conf.worker_send_task_events = False
    bare.noop.apply_async(("warm-up",))  # connection set up outside the clock
    started = time.perf_counter()
    for ref in names:
        bare.noop.apply_async((ref,))
    celery_seconds = time.perf_counter() - started

    started = time.perf_counter()
    with bare.app.producer_or_acquire() as pub:
        for ref in names:
            bare.noop.apply_async((ref,), producer=pub)
    held_seconds = time.perf_counter() - started
    queued = int(stack.client().llen(bare.QUEUE))
    stack.clean(**sandbox_config())

    pipeline_rate = n / pipeline_seconds
    celery_rate = n / celery_seconds
    held_rate = n / held_seconds
    ratio = pipeline_rate / celery_rate
    result = Result("submit", "5. Bulk submit rate from one producer process")
    result.figures = [
        Figure("Producer.submit_many (chunks of 1,000)", round(pipeline_rate), "intents/s"),
        Figure("Celery apply_async of a no-op task", round(celery_rate), "intents/s"),
        Figure(
            "ratio submit_many / apply_async", round(ratio, 2), "", ">= 1.0", at_least(ratio, 1.0)
        ),
        Figure(
            "apply_async with one held producer",
            round(held_rate),
            "intents/s",
            note=f"information; ratio against it {pipeline_rate / held_rate:.2f}",
        ),
        Figure(
            "building RefundIntent objects",
            round(n / build_seconds),
            "intents/s",
            note="information: validation, outside the clock above",
        ),
    ]
    result.method = [
        f"{n} intents, one process, one Redis (no AOF); nothing consumes the queue meanwhile.",
        "submit_many: the ledger records, state index and timers, one pipelined round trip per "
        f"chunk of 1,000 ({created} records created).",
        "apply_async: one broker message per intent with Celery defaults (no task-sent events); "
        f"{queued} messages were in the queue afterwards (both apply_async loops).",
    ]
    result.details = {
        "intents": n,
        "submit_many_seconds": pipeline_seconds,
        "apply_async_seconds": celery_seconds,
        "apply_async_held_producer_seconds": held_seconds,
        "build_intents_seconds": build_seconds,
        "created": created,
        "queued_messages": queued,
    }
    return result
