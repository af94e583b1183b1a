"""Benchmarks 1 and 2: refunds/s to final, pipeline against a bare Celery flow; cost per refund.

Both flows run N refunds against the same sandbox (no latency, refunds complete 0.2 s after
Confirm, a day-long token), with the same number of worker processes, the same concurrency and the
same worker options, on the same Redis. Each refund needs Create, Confirm and one Get: the first
Get comes after the pipeline's first poll delay (the bare flow's countdown is the same delay) and
finds the refund completed. The clock runs from the first submission to the last refund final.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from bench import bare
from bench.common import Figure, Plan, Result, at_least, chunks, intents, refs, txn_id
from bench.procstats import LoadMeter, sample
from bench.stack import PIPELINE_ENV, BenchStack, provider_calls, sandbox_config
from devstack.sandbox_admin import NO_EFFECTS
from devstack.wait import wait_until
from refunds.models import FINAL_STATES, State
from refunds.ops.counters import Stats
from refunds.producer import Producer
from refunds.store.ledger import Ledger

PROCESSING_SECONDS = 0.2  # below the first poll delay: one Get finds the refund final
FIRST_POLL = PIPELINE_ENV["REFUNDS_POLL_SCHEDULE"].split(",")[0]


@dataclass
class FlowRun:
    flow: str
    refunds: int
    seconds: float
    submit_seconds: float
    rate: float
    cpu_seconds: float  # worker (+ beat) process trees
    sandbox_cpu_seconds: float
    redis_cpu_seconds: float
    provider_calls: dict[str, int]
    token_calls: int
    unfinished: int
    states: dict[str, int]
    foreign_load_cores: float  # CPU other processes on the machine used meanwhile
    redis_commands: dict[str, int]  # calls per command during the run (INFO commandstats)

    @property
    def redis_commands_per_refund(self) -> float:
        return sum(self.redis_commands.values()) / self.refunds

    @property
    def calls_per_refund(self) -> float:
        calls = sum(n for op, n in self.provider_calls.items() if op != "token")
        return calls / self.refunds

    @property
    def cpu_ms_per_refund(self) -> float:
        return self.cpu_seconds / self.refunds * 1000


def _commandstats(stack: BenchStack) -> dict[str, int]:
    stats = stack.client().info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in out.items() if v), key=lambda kv: -kv[1]))


def _plus(counts: dict[str, int], name: str, extra: int) -> dict[str, int]:
    return {**counts, name: counts.get(name, 0) + extra}


def _other_cpu(stack: BenchStack) -> tuple[float, float]:
    s = sample([stack.sandbox.proc.pid]) if stack.sandbox and stack.sandbox.proc else None
    r = sample([stack.redis.proc.pid]) if stack.redis and stack.redis.proc else None
    return (s.cpu if s else 0.0, r.cpu if r else 0.0)


def run_pipeline(
    stack: BenchStack, n: int, workers: int, concurrency: int, timeout: float
) -> FlowRun:
    stack.clean(**sandbox_config(processing_seconds=PROCESSING_SECONDS))
    names = refs("pipe-", n)
    stack.admin.flag(txn_id(r) for r in names)
    env = stack.pipeline_env()
    stack.start_pipeline_workers(workers, concurrency, env, beat=True)
    producer = Producer(stack.settings())
    ledger = Ledger.from_url(stack.redis_url)
    batch = intents(names)
    time.sleep(1.0)  # beat's first ticks, pool processes idle
    before, other_before = sample(stack.celery_pids()), _other_cpu(stack)
    counters_before = stack.admin.calls()
    meter = LoadMeter()
    commands_before = _commandstats(stack)
    started = time.monotonic()
    for part in chunks(batch, 1000):
        producer.submit_many(part)
    submitted = time.monotonic()
    final = [str(s) for s in FINAL_STATES] + [str(State.NEEDS_ATTENTION)]

    polls = 0

    def settled() -> bool:
        nonlocal polls
        polls += 1
        counts = ledger.counts()
        return sum(counts.get(s, 0) for s in final) >= n

    unfinished = 0
    try:
        ended = wait_until(settled, timeout, what="all pipeline refunds final")
    except TimeoutError:
        ended = time.monotonic()
        counts = ledger.counts()
        unfinished = n - sum(counts.get(s, 0) for s in final)
    after, other_after = sample(stack.celery_pids()), _other_cpu(stack)
    foreign = meter.foreign_cores()
    # Less this script's own polling of the state counts (one SCARD per state per poll).
    commands = _delta(_commandstats(stack), _plus(commands_before, "scard", polls * len(State)))
    counters = stack.admin.counters(NO_EFFECTS)
    calls = {
        op: count - counters_before.get(op, 0) for op, count in provider_calls(counters).items()
    }
    token_calls = Stats.of(ledger).token_fetches()
    states = {k: v for k, v in ledger.counts().items() if v}
    stack.stop_celery()
    seconds = ended - started
    return FlowRun(
        flow="pipeline",
        refunds=n,
        seconds=seconds,
        submit_seconds=submitted - started,
        rate=(n - unfinished) / seconds,
        cpu_seconds=after.cpu - before.cpu,
        sandbox_cpu_seconds=other_after[0] - other_before[0],
        redis_cpu_seconds=other_after[1] - other_before[1],
        provider_calls=calls,
        token_calls=token_calls,
        unfinished=unfinished,
        states=states,
        foreign_load_cores=round(foreign, 2),
        redis_commands=commands,
    )


def run_bare(
    stack: BenchStack, n: int, workers: int, concurrency: int, timeout: float, *, events: bool
) -> FlowRun:
    stack.clean(**sandbox_config(processing_seconds=PROCESSING_SECONDS))
    names = refs("bare-", n)
    stack.admin.flag(txn_id(r) for r in names)
    env = stack.bare_env(events=events, poll_schedule=PIPELINE_ENV["REFUNDS_POLL_SCHEDULE"])
    stack.start_bare_workers(workers, concurrency, env)
    client = stack.client()
    # The producer side of the bare flow: the bench process sends the create tasks itself.
    bare.app.conf.broker_url = stack.redis_url
    bare.app.conf.worker_send_task_events = events
    bare.app.conf.task_send_sent_event = events
    time.sleep(1.0)
    before, other_before = sample(stack.celery_pids()), _other_cpu(stack)
    counters_before = stack.admin.calls()
    meter = LoadMeter()
    commands_before = _commandstats(stack)
    started = time.monotonic()
    with bare.app.producer_or_acquire() as pub:
        for ref in names:
            bare.create.apply_async((ref, txn_id(ref)), producer=pub)
    submitted = time.monotonic()

    polls = 0

    def done() -> int:
        nonlocal polls
        polls += 1
        return int(client.get(bare.DONE_KEY) or 0)

    unfinished = 0
    try:
        ended = wait_until(lambda: done() >= n, timeout, what="all bare refunds final")
    except TimeoutError:
        ended = time.monotonic()
        unfinished = n - done()
    after, other_after = sample(stack.celery_pids()), _other_cpu(stack)
    foreign = meter.foreign_cores()
    # Less this script's own polling of the completion counter (one GET per poll).
    commands = _delta(_commandstats(stack), _plus(commands_before, "get", polls))
    counters = stack.admin.counters(NO_EFFECTS)
    calls = {
        op: count - counters_before.get(op, 0) for op, count in provider_calls(counters).items()
    }
    stack.stop_celery()
    seconds = ended - started
    return FlowRun(
        flow="bare celery" + ("" if events else " (events off)"),
        refunds=n,
        seconds=seconds,
        submit_seconds=submitted - started,
        rate=(n - unfinished) / seconds,
        cpu_seconds=after.cpu - before.cpu,
        sandbox_cpu_seconds=other_after[0] - other_before[0],
        redis_cpu_seconds=other_after[1] - other_before[1],
        provider_calls=calls,
        token_calls=int(client.get(bare.TOKEN_CALLS_KEY) or 0),
        unfinished=unfinished,
        states={"completed": done()},
        foreign_load_cores=round(foreign, 2),
        redis_commands=commands,
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _rounds(runs: list[FlowRun]) -> str:
    return ", ".join(f"{r.rate:.1f} (others used {r.foreign_load_cores:.1f} cores)" for r in runs)


def throughput(stack: BenchStack, plan: Plan) -> tuple[Result, Result]:
    """Benchmark 1 (rates and ratio) and benchmark 2 (cost per refund) from the same runs.

    Pipeline and bare runs alternate (``plan.throughput_rounds`` of each), so a change in the
    machine's other load hits both flows alike; the figures are the means over the rounds.
    """
    n, workers, concurrency = plan.throughput_refunds, plan.workers, plan.concurrency
    timeout = 60 + n * 0.2
    pipes: list[FlowRun] = []
    plains: list[FlowRun] = []
    for _ in range(plan.throughput_rounds):
        pipes.append(run_pipeline(stack, n, workers, concurrency, timeout))
        plains.append(run_bare(stack, n, workers, concurrency, timeout, events=True))
    quiet = (
        run_bare(stack, n, workers, concurrency, timeout, events=False)
        if plan.events_off_run
        else None
    )
    pipe_rate = _mean([r.rate for r in pipes])
    plain_rate = _mean([r.rate for r in plains])
    ratio = pipe_rate / plain_rate if plain_rate else None
    pipe_cpu = _mean([r.cpu_ms_per_refund for r in pipes])
    plain_cpu = _mean([r.cpu_ms_per_refund for r in plains])
    shape = (
        f"{workers} worker processes x concurrency {concurrency} (prefork), "
        f"one beat (pipeline only), sandbox latency 0, processing {PROCESSING_SECONDS}s, "
        f"first poll / countdown {FIRST_POLL}s"
    )
    rounds = plan.throughput_rounds
    r1 = Result("throughput", "1. Pipeline refunds/s to final vs a bare Celery flow")
    r1.figures = [
        Figure(
            "pipeline refunds/s",
            round(pipe_rate, 1),
            "refunds/s",
            note=f"{n} refunds; rounds: {_rounds(pipes)}",
        ),
        Figure(
            "bare Celery flow refunds/s",
            round(plain_rate, 1),
            "refunds/s",
            note=f"events on; rounds: {_rounds(plains)}",
        ),
        Figure(
            "ratio pipeline / bare",
            None if ratio is None else round(ratio, 2),
            "",
            ">= 0.6",
            at_least(ratio, 0.6),
        ),
        Figure(
            "CPU ratio: bare CPU per refund / pipeline CPU per refund",
            round(plain_cpu / pipe_cpu, 2) if pipe_cpu else None,
            "",
            note="information: the rate ratio to expect when the CPU is the bound",
        ),
    ]
    if quiet is not None:
        r1.figures.append(
            Figure(
                "bare Celery flow refunds/s, task events off",
                round(quiet.rate, 1),
                "refunds/s",
                note="information: what Flower's events cost the bare flow; others used "
                f"{quiet.foreign_load_cores:.1f} cores meanwhile",
            )
        )
    for run in (*pipes, *plains, quiet):
        if run is not None and run.unfinished:
            r1.figures.append(
                Figure(f"{run.flow}: refunds not final at timeout", run.unfinished, "refunds")
            )
    r1.method = [
        f"N = {n} refunds per run; {shape}; {rounds} round(s) of pipeline then bare, "
        "alternating, figures are the means.",
        "Pipeline: Producer.submit_many in chunks of 1,000 (the bulk path; the scheduler tick "
        "hands the refunds out), then create -> confirm -> timer -> poll as in production.",
        "Bare flow (bench/bare.py): the bench process sends one `bench.create` per refund; "
        "create -> confirm -> Celery countdown -> get, one requests.Session and one token per "
        "process, no ledger, locks, timers, pacing or stats. Same Celery reliability settings as "
        "the pipeline (JSON, acks_late, prefetch 1, task events on)"
        + ("; a last run turns events off." if plan.events_off_run else "."),
        "Rate = N / (last refund final - first submission), final seen by polling the ledger "
        "state counts (pipeline) or the bare flow's completion counter every 50 ms.",
    ]
    r1.details = {"runs": [_run_dict(r) for r in (*pipes, *plains, quiet) if r is not None]}

    r2 = Result("cost", "2. Cost per refund (same runs as 1)")
    calls = sum(r.calls_per_refund for r in pipes) / len(pipes)
    plain_calls = sum(r.calls_per_refund for r in plains) / len(plains)
    tokens = max(r.token_calls for r in pipes)
    r2.figures = [
        Figure("pipeline worker+beat CPU per refund", round(pipe_cpu, 2), "ms"),
        Figure("bare flow worker CPU per refund", round(plain_cpu, 2), "ms"),
        Figure(
            "pipeline provider calls per refund",
            round(calls, 3),
            "calls",
            "3 (create, confirm, 1 get)",
            abs(calls - 3.0) < 0.01,
        ),
        Figure("bare flow provider calls per refund", round(plain_calls, 3), "calls"),
        Figure(
            "pipeline token calls per run",
            tokens,
            "calls",
            "1 (one per cluster)",
            tokens <= 1,
            "most in any round",
        ),
        Figure(
            "bare flow token calls per run",
            max(r.token_calls for r in plains),
            "calls",
            note="one per pool process",
        ),
        Figure(
            "pipeline sandbox CPU per refund",
            round(_mean([r.sandbox_cpu_seconds for r in pipes]) / n * 1000, 2),
            "ms",
        ),
        Figure(
            "pipeline Redis CPU per refund",
            round(_mean([r.redis_cpu_seconds for r in pipes]) / n * 1000, 2),
            "ms",
        ),
        Figure(
            "pipeline Redis commands per refund",
            round(_mean([r.redis_commands_per_refund for r in pipes]), 1),
            "commands",
            note="top: " + _top_commands(pipes[0]),
        ),
        Figure(
            "bare flow Redis commands per refund",
            round(_mean([r.redis_commands_per_refund for r in plains]), 1),
            "commands",
            note="top: " + _top_commands(plains[0]),
        ),
        Figure(
            "bare flow Redis CPU per refund",
            round(_mean([r.redis_cpu_seconds for r in plains]) / n * 1000, 2),
            "ms",
        ),
    ]
    r2.method = [
        "CPU: user+sys seconds of every process in the worker and beat process trees "
        "(/proc/<pid>/stat utime+stime+cutime+cstime, main processes and pool children), "
        "sampled just before the first submission and just after the last refund was final; "
        "the sandbox and Redis processes are sampled the same way for context. Means over the "
        "rounds.",
        "Provider calls: the sandbox's own call counters (/sandbox/counters), create+confirm+get "
        "per refund; token calls counted separately (the pipeline's shared token cache vs one "
        "token per pool process in the bare flow).",
        "Redis commands: INFO commandstats of the private Redis before and after each run (broker, "
        "ledger, locks, timers, stats and events together), divided by N; a Lua script counts "
        "as one EVALSHA plus the commands it runs.",
    ]
    r2.details = r1.details
    return r1, r2


def _top_commands(run: FlowRun, top: int = 8) -> str:
    return ", ".join(
        f"{name} {count / run.refunds:.1f}"
        for name, count in list(run.redis_commands.items())[:top]
    )


def _run_dict(run: FlowRun) -> dict[str, Any]:
    out = asdict(run)
    out["calls_per_refund"] = run.calls_per_refund
    out["cpu_ms_per_refund"] = run.cpu_ms_per_refund
    out["redis_commands_per_refund"] = run.redis_commands_per_refund
    return out
