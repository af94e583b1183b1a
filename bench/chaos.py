"""Benchmark 10: recovery under steady kills (issue 18 item 5): ``python -m bench.chaos``.

The chaos profile: 200 refunds submitted at once, 2 workers x concurrency 2, the sandbox's faults
on (503, 429, lost and too-slow answers, as the chaos harness injects them), and a random worker
SIGKILLed (its whole process group: no acks, no cleanup) every 3-6 s and started again 0.3-2 s
later, until every refund is final. The same run without kills is the clean run.

Two figures per run:

- **recovery**: for each kill, the refunds whose step message the killed worker held (asked of
  the worker with Celery's ``inspect active`` and ``inspect reserved`` just before the kill, and
  only the refund's current dispatch), the time from the kill to the next step that starts for
  any of them (the record's ``start``, the dispatch id a step writes as it begins, grows); p50,
  p95, max, split into messages that were running and messages reserved but not started;
- **total time**: from the submission to every refund final, clean and under kills.

Timings: production leases (step lease 6 s, dispatch lease 15 s), a 0.25 s tick, the chaos
harness's short HTTP timeouts (2 s read, so the sandbox's too-slow answers cost 3 s) and retry
backoff (0.1-1 s). The machine's load average is written next to each run: on a shared machine
the figures are only comparable between runs taken close together. Measures, never asserts.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Figure, Result, at_most, intents, percentile, refs, txn_id
from bench.stack import PIPELINE_ENV, BenchStack, dumps
from config.celery import make_celery
from devstack.processes import Child, wait_for_worker
from refunds.models import FINAL_STATES
from refunds.store.keys import record_key
from refunds.store.ledger import Ledger

REFUNDS = 200
WORKERS = 2
CONCURRENCY = 2
KILL_EVERY = (3.0, 6.0)
RESTART_AFTER = (0.3, 2.0)
TIMEOUT = 300.0
TARGET_P95 = 10.0
TARGET_RATIO = 2.0
STEP_TASKS = ("refunds.create", "refunds.confirm", "refunds.poll")
FINAL = frozenset(str(s) for s in FINAL_STATES)
RESULTS = Path(__file__).resolve().parent / "results"

ENV = {
    **PIPELINE_ENV,
    "REFUNDS_HTTP_CONNECT_TIMEOUT": "1",
    "REFUNDS_HTTP_READ_TIMEOUT": "2",
    "REFUNDS_TASK_SOFT_TIME_LIMIT": "8",
    "REFUNDS_TASK_TIME_LIMIT": "10",
    "REFUNDS_RETRY_BASE_SECONDS": "0.1",
    "REFUNDS_RETRY_MAX_SECONDS": "1",
}


def fault_config(read_timeout: float = 2.0) -> dict[str, Any]:
    """The chaos harness's faults (tests/chaos/harness.py ``fault_config``)."""
    return {
        "latency_ms": 0,
        "error_rates": {"503": 0.10, "429": 0.02},
        "retry_after_seconds": 1,
        "lost_rate": 0.05,
        "slow_rate": 0.02,
        "slow_ms": read_timeout * 1000 + 1000,
        "processing_seconds": 0.5,
        "token_ttl_seconds": 3600,
    }


@dataclass
class Watch:
    """One refund whose current dispatch the killed worker held."""

    ref: str
    kill: int
    killed_at: float
    start_at_kill: int
    running: bool  # the step had started (inspect active), else reserved, not started
    recovered_after: float | None = None
    done_before_kill: bool = False  # final, and no step started after the kill


@dataclass
class Run:
    kills: bool
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    total: float | None = None
    kill_count: int = 0
    held_messages: int = 0  # step messages the victims held, current dispatch or not
    watches: list[Watch] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    creates_not_once: int = 0

    def seconds(self, running: bool | None = None) -> list[float]:
        return sorted(
            w.recovered_after
            for w in self.watches
            if w.recovered_after is not None and (running is None or w.running == running)
        )

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, Any]:
            return {
                "n": len(values),
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
                "max": max(values, default=None),
            }

        return {
            "kills": self.kill_count,
            "total_s": self.total,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "held_messages": self.held_messages,
            "watched": len(self.watches),
            # Final without a newer step: the killed step had written its outcome already.
            "done_before_kill": sum(w.done_before_kill for w in self.watches),
            "not_recovered": sum(
                w.recovered_after is None and not w.done_before_kill for w in self.watches
            ),
            "recovery_all": stats(self.seconds()),
            "recovery_running": stats(self.seconds(True)),
            "recovery_reserved": stats(self.seconds(False)),
            "states": self.states,
            "creates_not_once": self.creates_not_once,
        }


def _args(value: Any) -> list[Any]:
    """A request's args as ``inspect`` answers them (a list, or its repr in older Celery)."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return []
    return list(value) if isinstance(value, list | tuple) else []


class ChaosBench:
    def __init__(self, stack: BenchStack, seed: int) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.env = stack.pipeline_env(**ENV)
        self.slots: dict[int, Child] = {}
        self.serial = 0
        self.celery = make_celery(stack.settings())
        self.ledger = Ledger.from_url(stack.redis_url)

    def start_slot(self, slot: int) -> Child:
        self.serial += 1
        child = self.stack.start_worker(
            f"chaosw{slot}n{self.serial}", concurrency=CONCURRENCY, env=self.env, wait=None
        )
        self.slots[slot] = child
        return child

    def held_by(self, victim: Child, live: int) -> list[tuple[str, int, bool]]:
        """``(ref, fence, running)`` of each step message ``victim`` holds, from Celery's own
        ``inspect`` (the worker's consumer answers it)."""
        inspect = self.celery.control.inspect(timeout=1.0, limit=live)
        held = []
        for running, answer in ((True, inspect.active()), (False, inspect.reserved())):
            for hostname, requests in (answer or {}).items():
                if not hostname.startswith(victim.name + "-"):
                    continue
                for request in requests:
                    args = _args(request.get("args"))
                    if request.get("name") in STEP_TASKS and len(args) == 2:
                        held.append((str(args[0]), int(args[1]), running))
        return held

    def fences(self, names: list[str]) -> list[tuple[int, int]]:
        """``(disp, start)`` of each refund: its latest dispatch id and the last one started."""
        pipe = self.ledger.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(record_key(name), "disp", "start")
        return [(int(d or 0), int(s or 0)) for d, s in pipe.execute()]

    def kill_one(self, run: Run, t: float, restart_at: dict[int, float], t0: float) -> None:
        live = [s for s, c in self.slots.items() if c.alive and s not in restart_at]
        if not live:
            return
        slot = self.rng.choice(live)
        victim = self.slots[slot]
        held = self.held_by(victim, len([c for c in self.slots.values() if c.alive]))
        now_fences = self.fences([ref for ref, _, _ in held])
        victim.kill()
        killed_at = time.monotonic() - t0
        run.kill_count += 1
        run.held_messages += len(held)
        for (ref, fence, running), (disp, start) in zip(held, now_fences, strict=True):
            if fence == disp:  # the refund's current dispatch, not a stale duplicate
                run.watches.append(Watch(ref, run.kill_count, killed_at, start, running))
        restart_at[slot] = t + self.rng.uniform(*RESTART_AFTER)

    def run(self, kills: bool, prefix: str) -> Run:
        stack = self.stack
        stack.clean(**fault_config())
        names = refs(prefix, REFUNDS)
        stack.admin.flag((txn_id(r) for r in names), outcome="completed")
        self.slots.clear()
        for slot in range(WORKERS):
            self.start_slot(slot)
        for child in self.slots.values():
            wait_for_worker(child, timeout=120)
        stack.start_beat(f"beat-{prefix}", self.env)
        run = Run(kills, load_before=os.getloadavg())
        t0 = time.monotonic()
        self.ledger.submit_many(intents(names), due_in=0.0)
        next_kill = self.rng.uniform(*KILL_EVERY)
        restart_at: dict[int, float] = {}
        next_check = 0.0
        while (t := time.monotonic() - t0) < TIMEOUT:
            if kills and t >= next_kill:
                next_kill = t + self.rng.uniform(*KILL_EVERY)
                self.kill_one(run, t, restart_at, t0)
            for slot, at in sorted(restart_at.items()):
                if t >= at:
                    del restart_at[slot]
                    self.start_slot(slot)
            self._note_recoveries(run, t0)
            if t >= next_check:
                next_check = t + 0.25
                states = self.ledger.states_of(names)
                if all(s in FINAL for s in states):
                    run.total = time.monotonic() - t0
                    break
            time.sleep(0.02)
        run.load_after = os.getloadavg()
        self._note_unrecovered(run, t0)
        records = self.ledger.states_of(names)
        run.states = {s: records.count(s) for s in sorted({str(s) for s in records})}
        effects = stack.admin.counters(prefix)["effects"]
        run.creates_not_once = sum(
            1 for r in names if int(effects.get(r, {}).get("create", 0)) != 1
        )
        stack.stop_celery()
        stack.workers.clear()
        return run

    def _note_unrecovered(self, run: Run, t0: float) -> None:
        """After the run: a last look, then a watched refund that is final though no step
        started after the kill had its outcome written by the killed step itself."""
        self._note_recoveries(run, t0)
        left = [w for w in run.watches if w.recovered_after is None]
        for watch, state in zip(left, self.ledger.states_of([w.ref for w in left]), strict=True):
            watch.done_before_kill = state in FINAL

    def _note_recoveries(self, run: Run, t0: float) -> None:
        waiting = [w for w in run.watches if w.recovered_after is None]
        if not waiting:
            return
        now = time.monotonic() - t0
        for watch, (_, start) in zip(waiting, self.fences([w.ref for w in waiting]), strict=True):
            if start > watch.start_at_kill:
                watch.recovered_after = now - watch.killed_at


def chaos(stack: BenchStack, seed: int) -> Result:
    result = Result("chaos", "10. Recovery under steady kills (chaos profile), clean vs chaos")
    bench = ChaosBench(stack, seed)
    clean = bench.run(kills=False, prefix="clean-")
    wild = bench.run(kills=True, prefix="chaos-")
    c, w = clean.summary(), wild.summary()
    p95 = w["recovery_all"]["p95"]
    ratio = None if not (clean.total and wild.total) else wild.total / clean.total
    note = (
        f"load avg (1/5/15 min) clean {clean.load_before}->{clean.load_after}, "
        f"chaos {wild.load_before}->{wild.load_after}"
    )
    result.figures = [
        Figure("kill -> next step, p50", w["recovery_all"]["p50"], "s", note=note),
        Figure("kill -> next step, p95", p95, "s", f"<= {TARGET_P95:g} s", at_most(p95, 10.0)),
        Figure("kill -> next step, max", w["recovery_all"]["max"], "s"),
        Figure("all final, clean", clean.total, "s"),
        Figure("all final, under kills", wild.total, "s", note=f"{wild.kill_count} kills"),
        Figure("chaos / clean", ratio, "x", f"<= {TARGET_RATIO:g}x", at_most(ratio, 2.0)),
    ]
    result.method = [
        f"{REFUNDS} refunds submitted at once; {WORKERS} workers x concurrency {CONCURRENCY}; "
        f"sandbox faults on; a random worker SIGKILLed every {KILL_EVERY[0]:g}-{KILL_EVERY[1]:g}"
        f" s and restarted {RESTART_AFTER[0]:g}-{RESTART_AFTER[1]:g} s later, until all final.",
        "Recovery: per kill, the refunds whose current dispatch the victim held (inspect active "
        "+ reserved just before the kill), kill -> the next step's start.",
    ]
    result.details = {"clean": c, "chaos": w, "seed": seed}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    parser.add_argument("--label", default="latest", help="results/chaos-LABEL.json")
    args = parser.parse_args()
    stack = BenchStack.start(keep=args.keep)
    try:
        result = chaos(stack, args.seed)
    finally:
        stack.close()
    for figure in result.figures:
        print(
            f"{figure.name:<28} {figure.value!s:<22} {figure.unit:<2} {figure.target} "
            f"{'' if figure.met is None else ('met' if figure.met else 'missed')} {figure.note}"
        )
    print(json.dumps(result.details, indent=1, default=str))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"chaos-{args.label}.json").write_text(dumps(result.to_dict()) + "\n")
    if args.keep:
        print(f"logs: {stack.workdir}")


if __name__ == "__main__":
    main()
