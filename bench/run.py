"""Run the benchmarks: ``python -m bench.run [--quick] [--only NAME[,NAME]]``.

Starts a private Redis (no AOF), the sandbox, and per benchmark the workers and beat it needs, as
child processes in a temporary directory; measures; writes ``bench/results/latest.json`` and
``latest.md`` (and ``full.*`` or ``quick.*`` for a complete run). Figures are printed as they come.
It never asserts a time: a target that is not reached is written down as "missed".

Benchmarks (``--only`` names): ``throughput`` (1 and 2: pipeline vs bare Celery, cost per refund),
``pacing`` (3), ``inflight`` (4), ``submit`` (5), ``batch`` (6: peak memory reading a batch file,
200 MB in the full plan, 20 MB in the quick one; needs no stack), ``durability`` (7: the latency
``WAIT`` for a replica adds to a submit, on a devstack.sentinel primary + replica), ``webhooks``
(8: provider calls per refund with webhook-first polling, webhooks healthy and 10% dropped),
``recovery`` (9: kill of a worker holding in-flight steps -> the next step of each, p50/p99/max).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.batch_memory import batch_memory
from bench.common import FULL, QUICK, Plan, Result
from bench.durability import durability
from bench.inflight import inflight
from bench.pacing import pacing
from bench.procstats import LoadMeter
from bench.recovery import recovery
from bench.stack import BenchStack
from bench.submit import submit
from bench.throughput import throughput
from bench.webhooks import webhooks

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def _throughput(stack: BenchStack, plan: Plan) -> list[Result]:
    return list(throughput(stack, plan))


BENCHMARKS: dict[str, Callable[[BenchStack, Plan], list[Result]]] = {
    "throughput": _throughput,
    "pacing": lambda stack, plan: [pacing(stack, plan)],
    "inflight": lambda stack, plan: [inflight(stack, plan)],
    "submit": lambda stack, plan: [submit(stack, plan)],
    "batch": lambda _stack, plan: [batch_memory(20.0 if plan.name == "quick" else 200.0)],
    "durability": lambda stack, plan: [durability(stack, plan)],
    "webhooks": lambda stack, plan: [webhooks(stack, plan)],
    "recovery": lambda stack, plan: [recovery(stack, plan)],
}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(  # noqa: S603 - fixed read-only git commands
            ["git", "--no-optional-locks", *args],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def machine_facts(stack: BenchStack, plan: Plan) -> dict[str, Any]:
    return {
        "plan": plan.name,
        "plan_sizes": dataclasses.asdict(plan),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis_version": stack.redis_info("server").get("redis_version"),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "redis_py": version("redis"),
        "commit": _git("rev-parse", "HEAD").strip() or "unknown",
        "dirty_files": len([x for x in _git("status", "--porcelain").splitlines() if x.strip()]),
        "load_average_at_start": os.getloadavg(),
        "workers_note": (
            f"{plan.workers} worker processes x concurrency {plan.concurrency} (prefork) and one "
            f"beat for benchmarks 1, 2 and 4 (the bare flow: the same workers, no beat); "
            f"{'/'.join(map(str, plan.pacing_workers))} x {plan.concurrency} for benchmark 3. "
            f"On {os.cpu_count()} cores, {plan.workers * plan.concurrency} pool processes already "
            "use all the CPU with a zero-latency provider; more only add switching."
        ),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: about 3 minutes")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--workers", type=int, help="worker processes (benchmarks 1, 2, 4)")
    parser.add_argument("--concurrency", type=int, help="pool processes per worker")
    parser.add_argument("--refunds", type=int, help="refunds per flow in benchmark 1")
    parser.add_argument("--inflight", type=int, help="refunds in flight in benchmark 4")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser.parse_args(argv)


def _plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.workers:
        changes["workers"] = args.workers
    if args.concurrency:
        changes["concurrency"] = args.concurrency
    if args.refunds:
        changes["throughput_refunds"] = args.refunds
    if args.inflight:
        changes["inflight_refunds"] = args.inflight
    return dataclasses.replace(plan, **changes) if changes else plan


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print(result: Result) -> None:
    print(f"== {result.title} ({result.seconds:.0f} s)", flush=True)
    if result.error:
        print(f"   failed: {result.error}", flush=True)
    for f in result.figures:
        verdict = "" if f.met is None else ("  [met]" if f.met else "  [MISSED]")
        target = f"  target {f.target}" if f.target else ""
        print(f"   {f.name}: {f.value} {f.unit}{target}{verdict}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    plan = _plan(args)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in only if x not in BENCHMARKS and x != "cost"]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    chosen = [
        name
        for name in BENCHMARKS
        if not only or name in only or (name == "throughput" and "cost" in only)
    ]
    os.chdir(ROOT)  # workers run ``celery -A worker.app`` / ``-A bench.bare`` from here
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    print(f"bench: {plan.name} run of {', '.join(chosen)}", flush=True)
    stack = BenchStack.start(keep=args.keep)
    results: list[Result] = []
    meta: dict[str, Any] = {}
    try:
        meta = machine_facts(stack, plan)
        for name in chosen:
            meter = LoadMeter()
            t0 = time.monotonic()
            try:
                produced = BENCHMARKS[name](stack, plan)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed benchmark must not lose the rest
                traceback.print_exc()
                produced = [Result(name, name, error=f"{type(exc).__name__}: {exc}")]
                stack.stop_celery()
            for result in produced:
                result.seconds = time.monotonic() - t0
                result.details["foreign_load_cores"] = round(meter.foreign_cores(), 2)
                _print(result)
            results += produced
    except KeyboardInterrupt:
        print("bench: interrupted; stopping children", file=sys.stderr, flush=True)
        return 130
    finally:
        stack.close()
        if args.keep:
            print(f"bench: logs kept in {stack.workdir}", flush=True)
    meta["seconds"] = time.monotonic() - started
    meta["load_average_at_end"] = os.getloadavg()
    complete = not only and not any((args.workers, args.concurrency, args.refunds, args.inflight))
    for path in report.write(args.out, plan.name, meta, results, complete):
        print(f"bench: wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
