"""Benchmark 4: 100,000 refunds in flight (created at the provider, not final).

Getting there for real would take this 2-core machine most of an hour (every refund needs a
Create and a Confirm through Celery, and the pipeline finishes some 40-60 refunds/s here), so the
in-flight population is built in three realistic steps, then the real workers and beat run over it:

1. The provider side: ``bench.preloaded_sandbox`` starts the simulator with one refund per
   reference already created and confirmed (status 2, processing for a week).
2. Intake: every intent goes through ``Producer.submit_many`` in chunks of 1,000 (the bulk path).
3. Create and Confirm: the pipeline's own step functions (``refunds.steps.create`` and
   ``.confirm``, with the real ledger, locks, transitions, history and timers) run in a few
   forked processes of this script instead of Celery tasks; only the HTTP call is replaced by a
   client that replays the preloaded sandbox's answer for that refund. So every ledger record is
   exactly what a worker would have written, and every refund is known to the sandbox.

Then the refunds' next polls are spread evenly over N / rate seconds (a steady state in which
polls come due at ``rate`` per second), the workers and beat start, and for a window of real
polling the script samples ``Ledger.timer_lag()`` every 0.25 s and the workers' memory every 3 s.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import requests

from bench.common import Figure, Plan, Result, at_most, chunks, intents, percentile, refs
from bench.procstats import sample
from bench.stack import BenchStack, sandbox_config
from devstack.processes import Child, free_port
from devstack.sandbox_admin import SandboxAdmin
from devstack.wait import wait_until
from refunds import steps
from refunds.context import Context
from refunds.mce.schemas import RefundData
from refunds.models import State
from refunds.ops.counters import Stats
from refunds.producer import Producer
from refunds.store import ledger as ledger_module
from refunds.store.ledger import ALL, TIMERS, Ledger, record_key, state_key

POLL_EVERY = 60.0  # the default schedule's last delay; every poll after the first waits this
PROCESSING_SECONDS = 7 * 86_400
RSS_EVERY = 3.0
LAG_EVERY = 0.25

# Filled in the parent before the populate processes fork: ref -> (create, confirm) answers.
_ANSWERS: dict[str, tuple[str, str]] = {}
_BY_ID: dict[str, str] = {}  # refund id -> ref


class _ReplayClient:
    """Stands in for MceClient in the populate step: the preloaded sandbox's answer, no HTTP."""

    def create(self, *, client_reference: str, **_: Any) -> RefundData:
        return RefundData.model_validate_json(_ANSWERS[client_reference][0])

    def confirm(self, *, crypto_refund_id: str, **_: Any) -> RefundData:
        return RefundData.model_validate_json(_ANSWERS[_BY_ID[crypto_refund_id]][1])


def _child_signals() -> None:
    """Forked populate processes end quietly on SIGTERM (the parent's handler raises)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _populate(args: tuple[list[str], str, str]) -> Counter[str]:
    """Create and Confirm a chunk of refunds with the pipeline's step functions (in a fork)."""
    chunk, redis_url, sandbox_url = args
    from config.settings import load_settings  # noqa: PLC0415 - per forked process

    settings = load_settings(
        profile="sandbox",
        redis_url=redis_url,
        mce_base_url=sandbox_url,
        poll_schedule=[POLL_EVERY],
    )
    ledger = Ledger.from_url(redis_url)
    pipeline = Context(
        settings=settings,
        ledger=ledger,
        client=_ReplayClient(),  # type: ignore[arg-type]
        stats=Stats.of(ledger),
    )
    notes: Counter[str] = Counter()
    for ref in chunk:
        notes[steps.create(pipeline, ref).note] += 1
        notes[steps.confirm(pipeline, ref).note] += 1
    ledger.redis.close()
    return notes


def _start_preloaded(stack: BenchStack, names: list[str]) -> tuple[Child, str, float]:
    refs_file = stack.workdir / "inflight-refs.txt"
    refs_file.write_text("\n".join(names))
    answers = stack.workdir / "inflight-answers.tsv"
    port = free_port()
    config = sandbox_config(processing_seconds=PROCESSING_SECONDS)
    args = [
        sys.executable,
        "-m",
        "bench.preloaded_sandbox",
        "--port",
        str(port),
        "--refs-file",
        str(refs_file),
        "--out",
        str(answers),
        "--config",
        json.dumps(config),
    ]
    started = time.monotonic()
    child = Child("preloaded-sandbox", args, stack.logdir / "preloaded-sandbox.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_until(SandboxAdmin(url).healthy, 600, what="preloaded sandbox", child=child)
    seconds = time.monotonic() - started
    _ANSWERS.clear()
    _BY_ID.clear()
    for line in answers.read_text().splitlines():
        ref, rid, created, confirmed = line.split("\t")
        _ANSWERS[ref] = (created, confirmed)
        _BY_ID[rid] = ref
    answers.unlink()
    return child, url, seconds


def _used_memory(stack: BenchStack) -> int:
    return int(stack.redis_info("memory")["used_memory"])


def _history_key(ref: str) -> str | None:
    """The history's own key, if this version of the ledger keeps the history apart."""
    make = getattr(ledger_module, "history_key", None)
    return str(make(ref)) if make is not None else None


def _history_is_list() -> bool:
    """Whether this version of the ledger keeps the history as a list (RPUSH) rather than a
    string (it then also has the key of the string that came before)."""
    return getattr(ledger_module, "legacy_history_key", None) is not None


@dataclass
class _Row:
    fields: dict[str, str]
    history: str | list[str] | None  # the history key's value (a list's lines), if it has one


def _layout_cost(r: redis.Redis, rows: list[_Row], layout: str) -> float:
    """used_memory per refund for copies of ``rows`` stored in a layout (then deleted).

    ``stored``: as the ledger stores them (the hash, plus the history string if it has one);
    ``split``: a ``hist`` field moved to a string key of its own; ``listpack``: the hash as stored
    with hash-max-listpack-value raised so it stays listpack-encoded (restored afterwards).
    """
    previous = str(r.config_get("hash-max-listpack-value")["hash-max-listpack-value"])
    if layout == "listpack":
        r.config_set("hash-max-listpack-value", 4096)
    try:
        before = int(r.info("memory")["used_memory"])
        pipe = r.pipeline(transaction=False)
        for i, row in enumerate(rows):
            fields = dict(row.fields)
            if layout == "split" and "hist" in fields:
                pipe.set(f"bench:probe:h:{i}", fields.pop("hist"))
            if isinstance(row.history, list):
                pipe.rpush(f"bench:probe:h:{i}", *row.history)
            elif row.history is not None:
                pipe.set(f"bench:probe:h:{i}", row.history)
            pipe.hset(f"bench:probe:r:{i}", mapping=cast("dict[Any, Any]", fields))
        pipe.execute()
        after = int(r.info("memory")["used_memory"])
    finally:
        r.config_set("hash-max-listpack-value", previous)
        keys = [f"bench:probe:{k}:{i}" for i in range(len(rows)) for k in ("r", "h")]
        for part in chunks(keys, 1000):
            r.delete(*part)
    return (after - before) / len(rows)


def _memory_details(stack: BenchStack, names: list[str], n: int) -> dict[str, Any]:
    """Where the bytes of one in-flight refund go, and what another layout would take."""
    r = stack.client()
    picks = random.Random(7).sample(names, min(2000, len(names)))
    pipe = r.pipeline(transaction=False)
    for ref in picks:
        pipe.hgetall(record_key(ref))
        history = _history_key(ref)
        if history is not None and _history_is_list():
            pipe.lrange(history, 0, -1)
        elif history is not None:
            pipe.get(history)
    answers = iter(pipe.execute())
    rows = []
    for ref in picks:
        fields = {str(k): str(v) for k, v in next(answers).items()}
        rows.append(_Row(fields, next(answers) if _history_key(ref) is not None else None))
    some = picks[:200]
    hash_usage = [int(r.memory_usage(record_key(ref), samples=0) or 0) for ref in some]
    history_keys = [k for k in (_history_key(ref) for ref in some) if k is not None]
    history_usage = [int(r.memory_usage(k, samples=0) or 0) for k in history_keys]
    encodings = Counter(str(r.object("encoding", record_key(ref))) for ref in some)
    in_hash = "hist" in rows[0].fields
    stored = rows[0].history
    stored_text = "\n".join(stored) if isinstance(stored, list) else (stored or "")
    history_text = rows[0].fields.get("hist", "") if in_hash else stored_text
    indexes = {
        key: int(r.memory_usage(key, samples=0) or 0)
        for key in (TIMERS, ALL, state_key(State.PROCESSING))
    }
    layouts = ("stored", "split", "listpack") if in_hash else ("stored",)
    return {
        "record_hash_memory_usage_avg": sum(hash_usage) / len(hash_usage),
        "history_key_memory_usage_avg": (
            sum(history_usage) / len(history_usage) if history_usage else None
        ),
        "history_in_hash": in_hash,
        "record_encodings": dict(encodings),
        "record_fields": len(rows[0].fields),
        "history_bytes": len(history_text),
        "record_longest_value": max(
            (len(v) for k, v in rows[0].fields.items() if k != "hist"), default=0
        ),
        "hash_listpack_config": r.config_get("hash-max-listpack-*"),
        "index_bytes_per_refund": {k: round(v / n, 1) for k, v in indexes.items()},
        "layout_bytes_per_refund": {
            layout: round(_layout_cost(r, rows, layout)) for layout in layouts
        },
        "layout_sample_size": len(rows),
        "sample_record": rows[0].fields,
        "sample_history": rows[0].history,
    }


@dataclass
class _Population:
    names: list[str]
    sandbox: Child
    sandbox_url: str
    phases: dict[str, float] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)
    counts: dict[str, int] = field(default_factory=dict)
    breakdown: dict[str, Any] = field(default_factory=dict)


def _populate_all(stack: BenchStack, plan: Plan) -> _Population:
    names = refs("fly-", plan.inflight_refunds)
    sandbox, url, seconds = _start_preloaded(stack, names)
    pop = _Population(names, sandbox, url, phases={"preload_sandbox": seconds})
    pop.memory["empty"] = _used_memory(stack)
    producer = Producer(stack.settings())
    started = time.monotonic()
    for part in chunks(intents(names), 1000):
        producer.submit_many(part)
    pop.phases["submit_many"] = time.monotonic() - started
    pop.memory["after_submit"] = _used_memory(stack)

    started = time.monotonic()
    work = [(list(c), stack.redis_url, url) for c in chunks(names, 1000)]
    pool = multiprocessing.get_context("fork").Pool(
        plan.inflight_populate_processes, initializer=_child_signals
    )
    try:
        for notes in pool.imap_unordered(_populate, work):
            pop.notes.update(notes)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    pop.phases["create_and_confirm_steps"] = time.monotonic() - started
    ledger = Ledger.from_url(stack.redis_url)
    pop.counts = {k: v for k, v in ledger.counts().items() if v}
    pop.memory["after_population"] = _used_memory(stack)
    pop.breakdown = _memory_details(stack, names, len(names))
    return pop


def inflight(stack: BenchStack, plan: Plan) -> Result:
    n, rate = plan.inflight_refunds, plan.inflight_poll_rate
    stack.clean(**sandbox_config())
    pop = _populate_all(stack, plan)
    try:
        # Nothing due while the workers start; then the steady spread.
        client = stack.client()
        far = time.time() + 3600
        for part in chunks(pop.names, 10_000):
            client.zadd(TIMERS, dict.fromkeys(part, far), xx=True)
        env = stack.pipeline_env(
            MCE_BASE_URL=pop.sandbox_url, REFUNDS_POLL_SCHEDULE=repr(POLL_EVERY)
        )
        stack.start_pipeline_workers(plan.workers, plan.concurrency, env, beat=True)
        time.sleep(2.0)
        begin = time.time() + 1.0
        rng = random.Random(11)
        due = {ref: begin + rng.uniform(0, n / rate) for ref in pop.names}
        for part in chunks(pop.names, 10_000):
            client.zadd(TIMERS, {ref: due[ref] for ref in part}, xx=True)
        observed = _observe(stack, pop, plan.inflight_window, begin)
        stack.stop_celery()
        observed.update(_poll_lags(stack, pop.names, due, observed["end_wall"]))
        observed["redis_memory_end"] = _used_memory(stack)
    finally:
        stack.stop_celery()
        pop.sandbox.stop()
    result = Result("inflight", f"4. {n:,} refunds in flight")
    result.figures = _figures(stack, plan, pop, observed)
    result.method = _method(stack, plan)
    result.details = {
        "phases_seconds": {k: round(v, 2) for k, v in pop.phases.items()},
        "step_notes": dict(pop.notes),
        "states_after_population": pop.counts,
        "used_memory": {**pop.memory, "end_of_window": observed["redis_memory_end"]},
        "memory_breakdown": pop.breakdown,
        "rss_samples": [{"t": round(t, 1), "rss": r, "pss": p} for t, r, p in observed["rss"]],
        "beat_rss_end": observed["beat_rss"],
        "timer_lag_samples": len(observed["lag_samples"]),
        "timer_lag_p50": percentile(observed["lag_samples"], 50),
        "timer_lag_max": max(observed["lag_samples"], default=None),
        "due_to_polled": observed["due_to_polled"],
        "window_calls": observed["calls"],
        "sandbox_cpu_seconds_in_window": observed["sandbox_cpu"],
    }
    return result


def _figures(
    stack: BenchStack, plan: Plan, pop: _Population, observed: dict[str, Any]
) -> list[Figure]:
    n = plan.inflight_refunds
    mem = pop.memory
    per_refund = (mem["after_population"] - mem["empty"]) / n
    lag_samples = observed["lag_samples"]
    lag_p99 = percentile(lag_samples, 99)
    polled = observed["due_to_polled"]
    rss = observed["rss"]
    steady = [s for s in rss if s[0] >= 10.0] or rss
    growth = (steady[-1][1] - steady[0][1]) / steady[0][1] if steady else None
    mib = 2**20
    b = pop.breakdown
    return [
        Figure(
            "Redis memory per in-flight refund",
            round(per_refund),
            "bytes",
            "<= 2048",
            at_most(per_refund, 2048),
            f"{(mem['after_population'] - mem['empty']) / mib:.0f} MiB for {n:,} refunds "
            "in processing",
        ),
        Figure(
            "Redis memory per refund at intake (state received)",
            round((mem["after_submit"] - mem["empty"]) / n),
            "bytes",
        ),
        *_breakdown_figures(b),
        Figure(
            "  index entries (rp:timers, rp:all, state set)",
            round(sum(b["index_bytes_per_refund"].values())),
            "bytes",
            note=", ".join(f"{k} {v:g}" for k, v in b["index_bytes_per_refund"].items()),
        ),
        Figure(
            "timer lag p99 (Ledger.timer_lag() every 0.25 s)",
            None if lag_p99 is None else round(lag_p99, 3),
            "s",
            "< 1",
            None if lag_p99 is None else lag_p99 < 1.0,
            f"max {max(lag_samples):.3f} s over {len(lag_samples)} samples" if lag_samples else "",
        ),
        Figure(
            "due -> polled p99 (each refund polled in the window)",
            None if polled["p99"] is None else round(polled["p99"], 3),
            "s",
            "< 1",
            None if polled["p99"] is None else polled["p99"] < 1.0,
            f"p50 {polled['p50'] or 0:.3f} s over {polled['count']} polls; "
            f"{polled['due_not_polled']} due but not polled by the end",
        ),
        Figure(
            "worker RSS growth over the window",
            None if growth is None else round(growth * 100, 1),
            "%",
            "flat: <= 5 %",
            None if growth is None else growth <= 0.05,
            f"{steady[0][1] / mib:.0f} -> {steady[-1][1] / mib:.0f} MiB summed over "
            f"{observed['processes']} worker processes (PSS {steady[0][2] / mib:.0f} -> "
            f"{steady[-1][2] / mib:.0f} MiB)"
            if steady
            else "",
        ),
        Figure(
            "polls served in the window",
            round(observed["get_rate"], 1),
            "GET/s",
            note=f"timers spread to come due at {plan.inflight_poll_rate:g}/s",
        ),
        Figure(
            "GET/s needed to poll every in-flight refund once a minute",
            round(n / POLL_EVERY),
            "GET/s",
            note=(
                "60 s is the default schedule's last delay; "
                "REFUNDS_POLL_SCHEDULE may go up to 3600 s"
            ),
        ),
    ]


def _breakdown_figures(b: dict[str, Any]) -> list[Figure]:
    limit = b["hash_listpack_config"].get("hash-max-listpack-value")
    encoding = "/".join(b["record_encodings"])
    layouts = b["layout_bytes_per_refund"]
    figures = [
        Figure(
            "  record hash, MEMORY USAGE",
            round(b["record_hash_memory_usage_avg"]),
            "bytes",
            note=f"encoding {encoding}, {b['record_fields']} fields"
            + (
                f"; its `hist` value is {b['history_bytes']} B, over "
                f"hash-max-listpack-value {limit}"
                if b["history_in_hash"]
                else ""
            ),
        )
    ]
    if b["history_key_memory_usage_avg"] is not None:
        figures.append(
            Figure(
                "  history key (list; a string before), MEMORY USAGE",
                round(b["history_key_memory_usage_avg"]),
                "bytes",
                note=f"{b['history_bytes']} B of history",
            )
        )
    figures.append(
        Figure(
            "  the refund's own keys as stored (copies of 2,000)",
            layouts["stored"],
            "bytes",
            note="used_memory growth per copy",
        )
    )
    if "split" in layouts:
        figures += [
            Figure(
                "  same, `hist` moved to a string key of its own",
                layouts["split"],
                "bytes",
                note="the hash then stays listpack",
            ),
            Figure(
                "  same hash with hash-max-listpack-value 4096",
                layouts["listpack"],
                "bytes",
            ),
        ]
    return figures


def _method(stack: BenchStack, plan: Plan) -> list[str]:
    n, rate = plan.inflight_refunds, plan.inflight_poll_rate
    tick = stack.pipeline_env()["REFUNDS_TICK_INTERVAL"]
    return [
        f"In-flight population of {n:,} refunds (see bench/inflight.py): a preloaded sandbox "
        "that already created and confirmed them; Producer.submit_many for the intake; the "
        "pipeline's own create/confirm step functions (real ledger, locks, transitions, history, "
        f"timers) in {plan.inflight_populate_processes} forked processes with a client that "
        "replays the sandbox's answers instead of HTTP. All end in `processing`; the sandbox "
        f"keeps them processing for {PROCESSING_SECONDS // 86400} days.",
        "Memory: Redis INFO used_memory with no worker running, after FLUSHALL and after the "
        "population, divided by the count. Breakdown: MEMORY USAGE (all fields) of the indexes; "
        "the refund's own keys from used_memory growth when those of 2,000 sampled refunds are "
        "copied as stored (and, when the history is a field of the hash, with it moved to a "
        "string key and with a larger hash-max-listpack-value); copies deleted afterwards.",
        f"Timers: the next poll of every refund spread uniformly over {n / rate:,.0f} s "
        f"({rate:g} due per second); REFUNDS_POLL_SCHEDULE={POLL_EVERY:g}, so a polled refund "
        f"comes back after {POLL_EVERY:g} s; {plan.workers} workers x concurrency "
        f"{plan.concurrency} + beat (tick {tick} s) poll for {plan.inflight_window:g} s against "
        "the sandbox over HTTP.",
        "Timer lag: Ledger.timer_lag() (how far the most overdue timer is past due) sampled "
        "every 0.25 s; per refund: the time its poll was written to the ledger minus the due "
        "time it was given (refunds polled twice in the window are left out).",
        f"Worker RSS: summed over the worker process trees every {RSS_EVERY:g} s; growth from "
        "the first sample 10 s into the window to the last.",
    ]


def _observe(stack: BenchStack, pop: _Population, window: float, begin: float) -> dict[str, Any]:
    admin_url = f"{pop.sandbox_url}/sandbox/counters"
    ledger = Ledger.from_url(stack.redis_url)
    preloaded = pop.sandbox
    http = requests.Session()

    def calls() -> dict[str, int]:
        r = http.get(admin_url, params={"prefix": "\x00"}, timeout=30)
        return {k: int(v) for k, v in r.json()["calls"].items()}

    lag_samples: list[float] = []
    rss: list[tuple[float, int, int]] = []
    stop = threading.Event()
    while time.time() < begin:
        time.sleep(0.05)
    t0 = time.monotonic()
    calls_before = calls()
    sandbox_cpu = sample([preloaded.proc.pid]).cpu if preloaded.proc else 0.0

    def lag_sampler() -> None:
        while not stop.is_set():
            lag_samples.append(ledger.timer_lag())
            stop.wait(LAG_EVERY)

    thread = threading.Thread(target=lag_sampler, daemon=True)
    thread.start()
    pids = stack.worker_pids()
    processes = 0
    while time.monotonic() - t0 < window:
        s = sample(pids)
        processes = s.processes
        rss.append((time.monotonic() - t0, s.rss, s.pss))
        time.sleep(RSS_EVERY)
    stop.set()
    thread.join()
    elapsed = time.monotonic() - t0
    calls_after = calls()
    delta = {k: calls_after[k] - calls_before.get(k, 0) for k in calls_after}
    beat = stack.beat
    beat_rss = sample([beat.proc.pid]).rss if beat is not None and beat.proc else 0
    return {
        "lag_samples": lag_samples,
        "rss": rss,
        "processes": processes,
        "calls": delta,
        "get_rate": delta.get("get", 0) / elapsed,
        "end_wall": time.time(),
        "beat_rss": beat_rss,
        "sandbox_cpu": (sample([preloaded.proc.pid]).cpu if preloaded.proc else 0.0) - sandbox_cpu,
    }


def _poll_lags(
    stack: BenchStack, names: list[str], due: dict[str, float], end: float
) -> dict[str, Any]:
    """Per refund due inside the window: when its poll was written, minus its due time."""
    r = stack.client()
    candidates = [ref for ref in names if due[ref] <= end - 2.0]
    lags: list[float] = []
    unpolled = twice = 0
    for part in chunks(candidates, 5000):
        pipe = r.pipeline(transaction=False)
        for ref in part:
            pipe.hmget(record_key(ref), ["polls", "updated"])
        for ref, (polls, updated) in zip(part, pipe.execute(), strict=True):
            if int(polls or 0) == 1 and updated is not None:
                lags.append(float(updated) - due[ref])
            elif int(polls or 0) > 1:
                twice += 1
            else:
                unpolled += 1
    return {
        "due_to_polled": {
            "count": len(lags),
            "p50": percentile(lags, 50),
            "p90": percentile(lags, 90),
            "p99": percentile(lags, 99),
            "max": max(lags, default=None),
            "due_not_polled": unpolled,
            "polled_twice_left_out": twice,
        }
    }
