"""Benchmark 3: the provider request rate the cluster achieves against MCE_MAX_RPS.

For 1, 2 and 4 worker processes: MCE_MAX_RPS=50 for the pipeline, the sandbox's own limit at 60
(on every operation, the token included), and far more refunds due at once than 50 calls/s can
serve, so demand exceeds the limit for the whole window. The rate is read from the sandbox's own
call counters over a steady window that starts after a warm-up, so worker start-up and the first
burst are excluded. Any 429 from the sandbox would mean the pacing let a burst through.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from bench.common import Figure, Plan, Result, chunks, intents, refs, txn_id
from bench.procstats import sample
from bench.stack import BenchStack, sandbox_config
from config.celery import PROVIDER_QUEUE, TIMERS_QUEUE
from devstack.sandbox_admin import NO_EFFECTS
from refunds.ops.counters import Stats
from refunds.producer import Producer
from refunds.store.ledger import Ledger

MAX_RPS = 50.0
SANDBOX_RPS = 60.0
TOLERANCE = 0.05


def _total_calls(counters: dict[str, Any]) -> int:
    return sum(int(n) for n in counters["calls"].values())


def _run_one(stack: BenchStack, plan: Plan, workers: int) -> dict[str, Any]:
    concurrency, n = plan.concurrency, plan.pacing_refunds
    warmup, window = plan.pacing_warmup, plan.pacing_window
    stack.clean(
        **sandbox_config(
            processing_seconds=2.0,
            max_rps=SANDBOX_RPS,
            fault_operations=["token", "create", "confirm", "get"],
        )
    )
    names = refs(f"pace{workers}-", n)
    stack.admin.flag(txn_id(r) for r in names)
    env = stack.pipeline_env(MCE_MAX_RPS=repr(MAX_RPS))
    stack.start_pipeline_workers(workers, concurrency, env, beat=True)
    producer = Producer(stack.settings())
    time.sleep(1.0)
    samples: list[tuple[float, int, int]] = []  # (monotonic, calls, 429s)
    stop = threading.Event()
    admin = stack.admin

    def sampler() -> None:
        while not stop.is_set():
            c = admin.counters(NO_EFFECTS)
            samples.append((time.monotonic(), _total_calls(c), int(c["faults"]["rate_limited"])))
            stop.wait(0.5)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    cpu_before = sample(stack.celery_pids()).cpu
    started = time.monotonic()
    for part in chunks(intents(names), 1000):
        producer.submit_many(part)
    time.sleep(warmup + window + 0.6)
    stop.set()
    thread.join()
    cpu = sample(stack.celery_pids()).cpu - cpu_before
    ledger = Ledger.from_url(stack.redis_url)
    # Demand left over at the end of the window: timers already due and steps waiting in queues.
    backlog_due = ledger.due_count(time.time())
    backlog_queued = sum(int(ledger.redis.llen(q)) for q in (PROVIDER_QUEUE, TIMERS_QUEUE))
    calls = Stats.of(ledger).calls()
    throttled = sum(n for (_, outcome), n in calls.items() if outcome == "throttled")
    counts = {k: v for k, v in ledger.counts().items() if v}
    stack.stop_celery()
    begin = started + warmup
    inside = [s for s in samples if begin <= s[0] <= begin + window]
    first, last = inside[0], inside[-1]
    rate = (last[1] - first[1]) / (last[0] - first[0])
    # Per-second rates inside the window, to show how even the pace is.
    per_second = [round((b[1] - a[1]) / (b[0] - a[0]), 1) for a, b in itertools.pairwise(inside)]
    sent = samples[-1][1]
    return {
        "workers": workers,
        "concurrency": concurrency,
        "refunds_submitted": n,
        "window_seconds": round(last[0] - first[0], 2),
        "calls_per_second": round(rate, 2),
        "calls_in_window": last[1] - first[1],
        "sandbox_429s": samples[-1][2],
        "sandbox_429s_in_window": last[2] - first[2],
        "throttled_steps_total": throttled,
        "provider_calls_total": sent,
        "throttled_per_sent_call": round(throttled / sent, 2) if sent else None,
        "worker_cpu_ms_per_sent_call": round(cpu / sent * 1000, 1) if sent else None,
        "half_second_rates": per_second,
        "ledger_states_at_end": counts,
        "backlog_at_end": {"due_timers": backlog_due, "queued_tasks": backlog_queued},
    }


def pacing(stack: BenchStack, plan: Plan) -> Result:
    concurrency, n = plan.concurrency, plan.pacing_refunds
    warmup, window = plan.pacing_warmup, plan.pacing_window
    result = Result("pacing", f"3. Provider request rate against MCE_MAX_RPS={MAX_RPS:g}")
    runs = [_run_one(stack, plan, w) for w in plan.pacing_workers]
    low, high = MAX_RPS * (1 - TOLERANCE), MAX_RPS * (1 + TOLERANCE)
    for run in runs:
        rate = run["calls_per_second"]
        result.figures.append(
            Figure(
                f"{run['workers']} worker process(es): provider calls/s",
                rate,
                "calls/s",
                f"{low:g}..{high:g} (within 5%)",
                low <= rate <= high,
                f"backlog at the end: {run['backlog_at_end']['due_timers']} due timers, "
                f"{run['backlog_at_end']['queued_tasks']} queued steps; throttled steps per "
                f"sent call: {run['throttled_per_sent_call']}; worker+beat CPU per sent call "
                f"{run['worker_cpu_ms_per_sent_call']} ms",
            )
        )
        result.figures.append(
            Figure(
                f"{run['workers']} worker process(es): sandbox 429s",
                run["sandbox_429s"],
                "responses",
                "0",
                run["sandbox_429s"] == 0,
            )
        )
    result.method = [
        f"MCE_MAX_RPS={MAX_RPS:g} for every worker; sandbox max_rps={SANDBOX_RPS:g} on token, "
        "create, confirm and get; processing 2 s, so each refund needs several Gets.",
        f"{n} refunds submitted at once (submit_many), each worker process with concurrency "
        f"{concurrency}, one beat; demand (hundreds of due steps) far above {MAX_RPS:g}/s.",
        f"Rate = provider calls counted by the sandbox (all operations) over a {window:g} s "
        f"window starting {warmup:g} s after the first submission (counters sampled every "
        "0.5 s); 429s counted by the sandbox over the whole run.",
        "Throttled steps: steps the pacer refused (put back on the timer without calling MCE), "
        "from the pipeline's own counters (rp:stats:calls, outcome 'throttled'); worker+beat "
        "CPU (/proc, process trees) from the first submission to the end of the window, per "
        "provider call sent in that time.",
    ]
    result.details = {"runs": runs}
    return result
