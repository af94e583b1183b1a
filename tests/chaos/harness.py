"""The chaos harness: a private pipeline that gets killed while it works, and the ledger checks.

One run owns everything it breaks: a redis-server on a fixed port and directory (AOF with
``appendfsync always``, so a SIGKILLed Redis restarted on the same port and directory comes back
with every acknowledged write), the sandbox with faults on, Celery worker processes and beat. A
single-threaded event loop, bounded in time, drives it:

- submits the refunds in waves spread over the run (alternating ``submit_many`` and one-by-one
  ``submit``), so refunds are in flight whenever something is killed;
- SIGKILLs a worker (its whole process group) or a single prefork pool process at random
  intervals, and starts a replacement worker after a short random delay;
- revokes the sandbox's tokens at random intervals;
- SIGKILLs Redis mid-run and restarts it from its AOF; workers and beat must reconnect by
  themselves, and any Celery process that dies meanwhile is restarted as a supervisor would
  (``systemd Restart=always``), each such restart counted and reported;
- waits until every refund is final, then checks the invariants (:func:`check_invariants`).

The kill schedule comes from one ``random.Random(seed)``; the sandbox's fault injector gets the same
seed. Process timing still varies between runs, so a replay follows the same schedule of draws, not
necessarily the same interleaving.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from config.settings import load_settings
from devstack.processes import Child, free_port, wait_for_worker
from devstack.sandbox_admin import SandboxAdmin
from devstack.stack import LocalStack
from refunds.models import FINAL_STATES, RefundIntent, RefundRecord, State, is_allowed
from refunds.producer import Producer
from refunds.store.keys import record_pattern
from refunds.store.ledger import TIMERS, Ledger, state_key
from tests.conftest import SANDBOX_TEST_CONFIG, TEST_ENV

FINAL = frozenset(str(s) for s in FINAL_STATES)
SETTLED = FINAL | {str(State.NEEDS_ATTENTION)}  # nothing more will happen without a human
STEP_RESULT = re.compile(r"Task refunds\.(?:create|confirm|poll)\[[^]]+\] succeeded in \S+: '(\w+)")
SUPERVISOR_RESTART_DELAY = 1.0  # like systemd's RestartSec: no tight crash loop


@dataclass(frozen=True)
class ChaosPlan:
    """How big and how violent one run is. Times are seconds from the start of the run."""

    name: str
    refunds: int
    workers: int = 2
    concurrency: int = 4
    waves: int = 8
    submit_seconds: float = 20.0  # the waves are spread over this
    chaos_seconds: float = 30.0  # worker kills and token revocations stop after this
    kill_every: tuple[float, float] = (3.0, 7.0)
    pool_kill_share: float = 0.3  # share of kills that hit one pool process, not the worker
    restart_after: tuple[float, float] = (0.3, 2.0)
    redis_kills: int = 1
    redis_down: tuple[float, float] = (1.0, 3.0)
    revoke_every: tuple[float, float] = (2.0, 5.0)
    timeout: float = 100.0  # the whole run, submissions to all final
    env: dict[str, str] = field(default_factory=dict)  # on top of the suite's TEST_ENV


def fault_config(read_timeout: float) -> dict[str, Any]:
    """The sandbox's faults: 10% 503, 2% 429 with Retry-After, 5% lost, 2% slower than our read
    timeout (the work is done, the answer comes too late)."""
    return {
        "error_rates": {"503": 0.10, "429": 0.02},
        "retry_after_seconds": 1,
        "lost_rate": 0.05,
        "slow_rate": 0.02,
        "slow_ms": read_timeout * 1000 + 1000,
        "processing_seconds": 0.5,
        "token_ttl_seconds": 3600,
    }


def pool_pids(parent: int) -> list[int]:
    """Direct children of ``parent`` (a prefork worker's pool processes), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        rest = text.rsplit(")", 1)[-1].split()
        if len(rest) > 1 and int(rest[1]) == parent:
            pids.append(int(stat.parent.name))
    return sorted(pids)


CODE_ROOT = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("config", "worker", "tasks", "refunds", "sandbox")


def code_stamp() -> dict[str, int]:
    """Modification times of the pipeline's sources: processes started after an edit run other
    code than those started before it, so a run during which the code changed proves little."""
    return {
        str(path.relative_to(CODE_ROOT)): path.stat().st_mtime_ns
        for package in CODE_PACKAGES
        for path in sorted((CODE_ROOT / package).rglob("*.py"))
    }


def last_failure(log_tail: str) -> str:
    """Why a process died: the last critical message in a JSON log tail, else the last error."""
    found: dict[str, str] = {}
    for line in log_tail.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("level") in ("critical", "error"):
                found[entry["level"]] = str(entry.get("msg", ""))[:160]
    return found.get("critical") or found.get("error", "")


# --- the processes ---------------------------------------------------------------------------


@dataclass
class Restart:
    at: float
    name: str
    returncode: int | None
    last_error: str


class ChaosStack(LocalStack):
    """Redis, the sandbox, worker slots and beat, each restartable; a small supervisor.

    A ``devstack.stack.LocalStack`` with what only chaos needs: Redis on a fixed port and
    directory (restartable from its AOF), worker ``slots`` refilled after kills (``workers`` keeps
    every incarnation, for the teardown), and a supervisor's restarts.
    """

    def __init__(self, workdir: Path, plan: ChaosPlan, seed: int, clock: Callable[[], float]):
        super().__init__(workdir, base_env={**TEST_ENV, **plan.env})
        self.redis_port = free_port()
        self.plan = plan
        self.seed = seed
        self.clock = clock
        self.slots: dict[int, Child] = {}
        self._serial = itertools.count(1)
        self._dead_since: dict[str, float] = {}

    def start(self) -> None:
        self.start_redis(self.redis_port)
        self.start_sandbox(extra_args=["--seed", str(self.seed)])
        for slot in range(self.plan.workers):
            self.start_slot(slot)
        for child in self.slots.values():
            wait_for_worker(child)
        self.restart_beat()

    def start_slot(self, slot: int) -> Child:
        # A new log file per incarnation, so "ready." in it is this process's own.
        name = f"worker{slot}-{next(self._serial)}"
        child = self.start_worker(name, concurrency=self.plan.concurrency, wait=None)
        self.slots[slot] = child
        return child

    def restart_beat(self) -> Child:
        return self.start_beat(name=f"beat-{next(self._serial)}")

    def live_workers(self) -> list[int]:
        return sorted(slot for slot, child in self.slots.items() if child.alive)

    def kill_redis(self) -> None:
        assert self.redis is not None
        self.redis.kill()

    def restart_redis(self) -> None:
        """Same port, same directory: Redis replays its AOF before it answers PING."""
        url = self.redis_url
        assert self.start_redis(self.redis_port) == url

    def supervise(self, planned_down: set[int]) -> list[Restart]:
        """Restart Celery processes that died on their own (not the ones we killed)."""
        done: list[Restart] = []
        for slot, child in sorted(self.slots.items()):
            if slot not in planned_down and self._due_restart(f"worker slot {slot}", child):
                done.append(self._record(f"worker slot {slot}", child))
                self.start_slot(slot)
        if self.beat is not None and self._due_restart("beat", self.beat):
            done.append(self._record("beat", self.beat))
            self.restart_beat()
        return done

    def _due_restart(self, what: str, child: Child) -> bool:
        if child.alive:
            self._dead_since.pop(what, None)
            return False
        since = self._dead_since.setdefault(what, self.clock())
        if self.clock() - since < SUPERVISOR_RESTART_DELAY:
            return False
        del self._dead_since[what]
        return True

    def _record(self, what: str, child: Child) -> Restart:
        rc = child.proc.returncode if child.proc is not None else None
        return Restart(self.clock(), f"{what} ({child.name})", rc, last_failure(child.tail(40)))

    def log_texts(self, pattern: str = "*.log") -> dict[str, str]:
        return {p.name: p.read_text(errors="replace") for p in sorted(self.logdir.glob(pattern))}


# --- the run ----------------------------------------------------------------------------------


@dataclass
class RedisOutage:
    killed_at: float
    in_flight: int  # submitted refunds not yet settled when Redis was killed
    submitted: int  # refunds submitted before the kill
    restarted_at: float = 0.0
    missing_after: list[str] = field(default_factory=list)
    resumed_after: float | None = None  # first refund completed after the restart, seconds


@dataclass
class ChaosReport:
    plan: ChaosPlan
    seed: int
    prefix: str
    workdir: Path
    refs: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    submit_errors: int = 0
    first_submit: float | None = None
    last_submit: float | None = None
    settled_at: float | None = None
    ended_at: float = 0.0
    worker_kills: int = 0
    pool_kills: int = 0
    outages: list[RedisOutage] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    revocations: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)
    records: list[RefundRecord] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    log_counts: dict[str, int] = field(default_factory=dict)
    setup_seconds: float = 0.0
    step_results: Counter[str] = field(default_factory=Counter)
    code_changed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def event(self, at: float, text: str) -> None:
        self.events.append((at, text))

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def note_code_changes(self, before: dict[str, int]) -> None:
        after = code_stamp()
        self.code_changed = sorted(
            f for f in before.keys() | after.keys() if before.get(f) != after.get(f)
        )

    def summary(self) -> str:
        """A short, readable account of the run (printed with ``pytest -s``)."""
        p = self.plan
        n = max(len(self.refs), 1)
        states = Counter(str(r.state) for r in self.records)
        calls = self.counters.get("calls", {})
        faults = {k: v for k, v in self.counters.get("faults", {}).items() if v}
        unauthorized = sum(by.get("401", 0) for by in self.counters.get("responses", {}).values())
        if self.settled_at is not None:
            settle = (
                f"{self.settled_at - (self.first_submit or 0):.1f}s from the first submit "
                f"({self.settled_at - (self.last_submit or 0):.1f}s after the last)"
            )
        else:
            settle = f"NOT all final within {p.timeout:.0f}s"

        def row(label: str, text: str) -> str:
            return f"{label:<20}{text}"

        lines = [
            f"=== chaos run '{p.name}', seed {self.seed} (replay: CHAOS_SEED={self.seed}) ===",
            row(
                "refunds",
                f"{len(self.refs)} submitted in {p.waves} waves over {p.submit_seconds:.0f}s "
                f"({self.submit_errors} submit retries); {p.workers} workers x {p.concurrency}",
            ),
            row(
                "outcome",
                ", ".join(f"{v} {k}" for k, v in states.most_common())
                + f" ({len(self.records)} records)",
            ),
            row(
                "time to all final",
                f"{settle}; whole run {self.ended_at + self.setup_seconds:.1f}s "
                f"incl. {self.setup_seconds:.1f}s start-up",
            ),
            row(
                "worker kills",
                f"{self.worker_kills + self.pool_kills} SIGKILL: {self.worker_kills} whole workers "
                f"(replaced after {p.restart_after[0]}-{p.restart_after[1]}s), "
                f"{self.pool_kills} single pool processes",
            ),
            row("Redis restarts", f"{len(self.outages)} SIGKILL + restart from AOF, same port/dir"),
        ]
        for i, o in enumerate(self.outages, 1):
            if o.resumed_after is None:
                resumed = "no refund completed after it"
            elif o.resumed_after < 0.5:  # the ledger is read every 0.5 s
                resumed = "refunds completing again within 0.5s"
            else:
                resumed = f"refunds completing again after {o.resumed_after:.1f}s"
            lines.append(
                row(
                    f"  #{i}",
                    f"at {o.killed_at:.1f}s, {o.in_flight} refunds in flight, down "
                    f"{o.restarted_at - o.killed_at:.1f}s, {len(o.missing_after)} of "
                    f"{o.submitted} records missing after the restart, {resumed}",
                )
            )
        lines.append(
            row(
                "supervisor",
                f"{len(self.restarts)} restarts of Celery processes that died on their own",
            )
        )
        for r in self.restarts:
            lines.append(row("  restart", f"{r.name} at {r.at:.1f}s, exit {r.returncode}"))
            if r.last_error:
                lines.append(row("", f"  its last error: {r.last_error}"))
        lines += [
            row(
                "token revocations",
                f"{self.revocations} (401 answers {unauthorized}, "
                f"tokens issued {self.counters.get('tokens_issued', 0)})",
            ),
            row(
                "provider calls",
                f"{sum(calls.values())} in all, {sum(calls.values()) / n:.2f} per refund: "
                + ", ".join(f"{op} {c / n:.2f}" for op, c in calls.items()),
            ),
            row(
                "faults injected",
                f"{sum(faults.values())} in all: "
                + (", ".join(f"{k} {v}" for k, v in faults.items()) or "none"),
            ),
            row(
                "step results",
                f"{sum(self.step_results.values())} step tasks finished: "
                + ", ".join(f"{k} {v}" for k, v in self.step_results.most_common()),
            ),
            row("process logs", ", ".join(f"{k} {v}" for k, v in self.log_counts.items())),
        ]
        failed = [c for c, found in self.problems.items() if found]
        lines.append(
            row(
                "checks",
                f"all {len(self.problems)} hold"
                if not failed
                else f"{len(failed)} of {len(self.problems)} FAILED",
            )
        )
        for check, found in self.problems.items():
            verdict = "ok" if not found else f"FAILED ({len(found)}): " + "; ".join(found[:5])
            lines.append(
                row("  " + verdict.split(" ")[0], check + ("" if not found else ": " + verdict))
            )
        if self.code_changed:
            lines.append(
                row("WARNING", "sources changed during the run (mixed code versions): ")
                + ", ".join(self.code_changed[:5])
            )
        lines.append(row("logs", str(self.workdir)))
        return "\n".join(lines)


@dataclass
class _LoopState:
    """The event loop's schedule and what it has seen so far; times are seconds of the run."""

    waves: list[list[str]]  # references not yet due, one list per wave
    wave_at: list[float]  # when each remaining wave is due
    redis_kill_at: list[float]  # when each remaining Redis kill is due
    next_kill: float
    next_revoke: float
    restart_at: dict[int, float] = field(default_factory=dict)  # worker slot -> restart time
    redis_up_at: float | None = None  # when a killed Redis comes back; None: Redis is up
    outage: RedisOutage | None = None  # the latest Redis outage
    pending: list[str] = field(default_factory=list)  # due, not yet submitted
    completed_seen: int = 0  # completed refunds at the last look
    next_check: float = 0.0
    retry_submit_at: float = 0.0

    @property
    def redis_up(self) -> bool:
        return self.redis_up_at is None

    @classmethod
    def schedule(cls, plan: ChaosPlan, rng: random.Random, refs: list[str]) -> _LoopState:
        """Waves spread evenly over ``plan.submit_seconds``, Redis kills spread over it with a
        second of jitter, the first worker kill and revocation drawn; the draws from ``rng``
        in this order."""
        per_wave = -(-plan.refunds // plan.waves)
        waves = [refs[i : i + per_wave] for i in range(0, plan.refunds, per_wave)]
        wave_at = [plan.submit_seconds * k / max(len(waves) - 1, 1) for k in range(len(waves))]
        redis_kill_at = sorted(
            plan.submit_seconds * (k + 1) / (plan.redis_kills + 1) + rng.uniform(-1.0, 1.0)
            for k in range(plan.redis_kills)
        )
        next_kill = rng.uniform(*plan.kill_every)
        next_revoke = rng.uniform(*plan.revoke_every)
        return cls(waves, wave_at, redis_kill_at, next_kill, next_revoke)


class ChaosRun:
    """Drives one run: submissions, kills, revocations, Redis outages, supervision, waiting."""

    def __init__(self, plan: ChaosPlan, workdir: Path, seed: int, prefix: str) -> None:
        self.plan = plan
        self.rng = random.Random(seed)
        self.t0 = time.monotonic()
        self.stack = ChaosStack(workdir, plan, seed, self.now)
        self.report = ChaosReport(plan, seed, prefix, workdir)
        self.report.refs = [f"{prefix}{i:05d}" for i in range(plan.refunds)]
        self._submit_calls = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, text: str) -> None:
        self.report.event(self.now(), text)

    # --- set-up ---

    def _connect(self) -> None:
        stack = self.stack
        # The producer's settings must be the workers' (TEST_ENV): its safety-net timer is
        # ``lease_seconds`` out, and the default 90 s would make every lost nudge cost 90 s.
        settings = load_settings(
            **{
                key.removeprefix("REFUNDS_").lower(): value
                for key, value in stack.env.items()
                if key.startswith("REFUNDS_")
            },
            redis_url=stack.redis_url,
            mce_base_url=stack.sandbox_url,
        )
        assert settings.lease_seconds == float(stack.env["REFUNDS_LEASE_SECONDS"])
        self.ledger = Ledger.from_url(stack.redis_url)
        self.producer = Producer(settings, ledger=self.ledger)
        self.admin = SandboxAdmin(stack.sandbox_url, defaults=SANDBOX_TEST_CONFIG)
        read_timeout = float(stack.env["REFUNDS_HTTP_READ_TIMEOUT"])
        self.admin.reset(**fault_config(read_timeout))
        refs = self.report.refs
        for start in range(0, len(refs), 500):
            self.admin.flag([f"{r}-tx" for r in refs[start : start + 500]], outcome="completed")

    def _intent(self, ref: str) -> RefundIntent:
        return RefundIntent.parse(
            {
                "originalTransactionType": 1,
                "originalTransactionId": f"{ref}-tx",
                "clientReference": ref,
            }
        )

    # --- the loop ---

    def run(self) -> ChaosReport:
        plan, rng, report = self.plan, self.rng, self.report
        self.t0 = time.monotonic()
        stamp = code_stamp()
        try:
            self.stack.start()
            self._connect()
            self.log(f"stack up: redis {self.stack.redis_url}, sandbox {self.stack.sandbox_url}")
            self.report.setup_seconds = self.now()
            self.t0 = time.monotonic()  # the run's clock starts at the first wave
            self._loop(plan, rng, report)
            self._finish()
        finally:
            report.ended_at = self.now()
            report.note_code_changes(stamp)
            self.stack.stop()
            self._write_files()
        return report

    def _loop(self, plan: ChaosPlan, rng: random.Random, report: ChaosReport) -> None:
        """One pass every 50 ms until every refund is settled or ``plan.timeout``: each pass
        does, in this order, whatever of the schedule in ``_LoopState`` is due. The order (and
        so the order of the draws from ``rng``) is part of what a seed replays."""
        s = _LoopState.schedule(plan, rng, report.refs)
        while self.now() < plan.timeout:
            t = self.now()
            self._redis_back_if_due(s, t)
            self._submit_if_due(s, t)
            self._kill_workers_if_due(s, t, rng)
            self._revoke_if_due(s, t, rng)
            if self._kill_redis_if_due(s, t, rng):
                continue  # Redis just died: nothing below can read it
            for restart in self.stack.supervise(set(s.restart_at)):
                report.restarts.append(restart)
                self.log(f"supervisor restarted {restart.name}: exit {restart.returncode}")
            if self._all_settled(s, t):
                report.settled_at = self.now()
                self.log("every refund settled")
                return
            time.sleep(0.05)
        self.log(f"timeout after {plan.timeout:.0f}s")
        if not s.redis_up:  # timed out during an outage: the checks need Redis back
            self.stack.restart_redis()

    def _redis_back_if_due(self, s: _LoopState, t: float) -> None:
        """Redis comes back: same port and directory, the AOF replayed; the records missing
        afterwards are what the outage cost (the checks say whether any may be)."""
        if s.redis_up_at is None or t < s.redis_up_at:
            return
        assert s.outage is not None
        self.stack.restart_redis()
        s.outage.restarted_at = self.now()
        s.outage.missing_after = self._missing(self.report.submitted)
        self.log(
            f"Redis restarted from AOF; {len(s.outage.missing_after)} of "
            f"{len(self.report.submitted)} submitted records missing"
        )
        s.redis_up_at = None

    def _submit_if_due(self, s: _LoopState, t: float) -> None:
        """Waves whose time has come join the pending list; it is submitted only against a live
        Redis, and a failed submission is retried 0.5 s later, as a producer would."""
        while s.waves and t >= s.wave_at[0]:
            s.wave_at.pop(0)
            s.pending += s.waves.pop(0)
        if s.pending and s.redis_up and t >= s.retry_submit_at:
            s.pending = self._submit(s.pending)
            if s.pending:
                s.retry_submit_at = t + 0.5

    def _kill_workers_if_due(self, s: _LoopState, t: float, rng: random.Random) -> None:
        """Kill a worker or pool process while the chaos lasts (the next kill is drawn even
        after it, keeping the draws in step), and start the replacements that are due."""
        if t >= s.next_kill:
            s.next_kill = t + rng.uniform(*self.plan.kill_every)
            if t < self.plan.chaos_seconds:
                self._kill_a_worker(rng, s.restart_at)
        for slot, at in sorted(s.restart_at.items()):
            if t >= at:
                del s.restart_at[slot]
                child = self.stack.start_slot(slot)
                self.log(f"started {child.name} in slot {slot}")

    def _revoke_if_due(self, s: _LoopState, t: float, rng: random.Random) -> None:
        """Revoke the sandbox's tokens while the chaos lasts; a revocation that fails (the
        sandbox busy) is simply not counted."""
        if t < s.next_revoke:
            return
        s.next_revoke = t + rng.uniform(*self.plan.revoke_every)
        if t < self.plan.chaos_seconds:
            with contextlib.suppress(Exception):
                self.admin.revoke_tokens()
                self.report.revocations += 1

    def _kill_redis_if_due(self, s: _LoopState, t: float, rng: random.Random) -> bool:
        """SIGKILL Redis at its scheduled time and draw when it comes back; True when it was
        killed. The completed count just before is the baseline for "resumed after"."""
        if not (s.redis_up and s.redis_kill_at and t >= s.redis_kill_at[0]):
            return False
        report = self.report
        s.redis_kill_at.pop(0)
        progress = self._progress()
        in_flight = len(report.submitted) - progress[0] if progress else -1
        s.completed_seen = progress[1] if progress else s.completed_seen
        self.stack.kill_redis()
        s.outage = RedisOutage(self.now(), in_flight, len(report.submitted))
        report.outages.append(s.outage)
        s.redis_up_at = self.now() + rng.uniform(*self.plan.redis_down)
        self.log(f"SIGKILL Redis with {in_flight} refunds in flight")
        return True

    def _all_settled(self, s: _LoopState, t: float) -> bool:
        """Every 0.5 s against a live Redis: note when refunds first complete again after an
        outage, and say whether the run is over (everything submitted, every Redis kill done,
        every refund settled)."""
        if not s.redis_up or t < s.next_check:
            return False
        s.next_check = t + 0.5
        progress = self._progress()
        if progress is None:
            return False
        settled, completed = progress
        outage = s.outage
        resumed = outage is not None and outage.resumed_after is not None
        if outage is not None and not resumed and completed > s.completed_seen:
            outage.resumed_after = self.now() - outage.restarted_at
        s.completed_seen = completed
        done = not s.waves and not s.pending and not s.redis_kill_at
        return done and settled == len(self.report.refs)

    def _submit(self, pending: list[str]) -> list[str]:
        """Submit what is pending, alternating one batch and one by one; returns what is left
        after an error (a producer retries; submission is idempotent on the reference)."""
        report = self.report
        batch = self._submit_calls % 2 == 0
        self._submit_calls += 1
        done: list[str] = []
        try:
            if batch:
                result = self.producer.submit_many([self._intent(r) for r in pending])
                report.conflicts += [str(c) for c in result.conflicts]
                done, pending = pending, []
            else:
                while pending:
                    self.producer.submit(self._intent(pending[0]))
                    done.append(pending.pop(0))
        except Exception as exc:  # noqa: BLE001 - a producer retries whatever broke
            report.submit_errors += 1
            self.log(f"submit failed, will retry: {type(exc).__name__}: {exc}")
        if done:
            report.first_submit = report.first_submit or self.now()
            report.last_submit = self.now()
            report.submitted += done
            self.log(f"submitted {len(done)} ({'batch' if batch else 'one by one'})")
        return pending

    def _kill_a_worker(self, rng: random.Random, restart_at: dict[int, float]) -> None:
        live = [s for s in self.stack.live_workers() if s not in restart_at]
        if not live:
            return
        slot = rng.choice(live)
        child = self.stack.slots[slot]
        assert child.proc is not None
        pool = pool_pids(child.proc.pid)
        if pool and rng.random() < self.plan.pool_kill_share:
            pid = rng.choice(pool)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.report.pool_kills += 1
            self.log(f"SIGKILL pool process {pid} of {child.name}")
            return
        child.kill()
        self.report.worker_kills += 1
        restart_at[slot] = self.now() + rng.uniform(*self.plan.restart_after)
        self.log(f"SIGKILL {child.name} (worker and pool)")

    def _states(self, refs: list[str]) -> list[str | None]:
        out: list[str | None] = []
        for start in range(0, len(refs), 1000):
            out += self.ledger.states_of(refs[start : start + 1000])
        return out

    def _progress(self) -> tuple[int, int] | None:
        try:
            states = self._states(self.report.submitted)
        except redis.RedisError:
            return None
        settled = sum(s in SETTLED for s in states)
        completed = sum(s == State.COMPLETED for s in states)
        return settled, completed

    def _missing(self, refs: list[str]) -> list[str]:
        deadline = time.monotonic() + 10
        while True:
            try:
                return [r for r, s in zip(refs, self._states(refs), strict=True) if s is None]
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    # --- after the run ---

    def _finish(self) -> None:
        report = self.report
        report.records = self.ledger.get_many(report.refs)
        report.counters = self.admin.counters(report.prefix)
        report.problems = check_invariants(self.ledger, report)
        for kind in ("worker", "beat"):
            texts = self.stack.log_texts(f"{kind}*.log").values()
            report.log_counts[f"{kind} 'broker lost'"] = sum(
                t.count("Connection to broker lost") for t in texts
            )
            report.log_counts[f"{kind} error lines"] = sum(
                t.count('"level": "error"') + t.count('"level": "critical"') for t in texts
            )
            if kind == "worker":
                # What the steps said they did, by the first word of their note ("retry in 0.4s",
                # "throttled for 1.0s", "busy: ..."): how much work the faults and kills cost.
                report.step_results = Counter(
                    m.group(1) for t in texts for m in STEP_RESULT.finditer(t)
                )

    def _write_files(self) -> None:
        workdir = self.report.workdir
        with contextlib.suppress(OSError):
            (workdir / "events.txt").write_text(
                "\n".join(f"{at:8.2f}s  {text}" for at, text in self.report.events) + "\n"
            )
            (workdir / "summary.txt").write_text(self.report.summary() + "\n")

    def diagnostics(self, limit: int = 5) -> str:
        """What a failed run leaves to read: unsettled records, the timeline, log tails."""
        report = self.report
        stuck = [r for r in report.records if str(r.state) != State.COMPLETED][:limit]
        parts = ["--- records not completed (sample) ---"]
        for r in stuck:
            history = [f"{h.from_state}->{h.to_state} ({h.reason})" for h in r.history[-4:]]
            parts.append(
                json.dumps(
                    {
                        "ref": r.client_reference,
                        "state": str(r.state),
                        "attempts": r.attempts,
                        "last_error": r.last_error,
                        "history": history,
                    }
                )
            )
        parts.append("--- timeline (last 40 events) ---")
        parts += [f"{at:8.2f}s  {text}" for at, text in report.events[-40:]]
        for name, text in self.stack.log_texts().items():
            parts.append(f"--- {name} (last 8 lines) ---")
            parts += text.splitlines()[-8:]
        return "\n".join(parts)


# --- the checks -------------------------------------------------------------------------------


def check_history(record: RefundRecord) -> list[str]:
    """History starts None -> received; each entry is an allowed edge continuing the previous."""
    ref = record.client_reference
    history = record.history
    if not history:
        return [f"{ref}: no history"]
    problems = []
    first = history[0]
    if first.from_state is not None or first.to_state != State.RECEIVED:
        problems.append(f"{ref}: history starts {first.from_state}->{first.to_state}")
    for prev, entry in itertools.pairwise(history):
        if entry.from_state is None or not is_allowed(
            State(entry.from_state), State(entry.to_state)
        ):
            problems.append(f"{ref}: {entry.from_state}->{entry.to_state} is not in the table")
        if prev.to_state != entry.from_state:
            problems.append(f"{ref}: {prev.to_state} then {entry.from_state}->{entry.to_state}")
    if history[-1].to_state != record.state:
        problems.append(f"{ref}: history ends in {history[-1].to_state}, state is {record.state}")
    return problems


def check_invariants(ledger: Ledger, report: ChaosReport) -> dict[str, list[str]]:
    """Every check by name, with the problems found (an empty list means it holds)."""
    refs = report.refs
    records = {r.client_reference: r for r in report.records}
    problems: dict[str, list[str]] = {}

    problems["every refund submitted"] = [
        *(
            [f"{len(refs) - len(report.submitted)} never submitted"]
            if sorted(report.submitted) != sorted(refs)
            else []
        ),
        *report.conflicts,
    ]
    problems["every refund completed"] = [
        f"{r.client_reference}: {r.state}"
        + (f" ({r.last_error.get('code')})" if r.last_error else "")
        for r in records.values()
        if r.state != State.COMPLETED
    ]

    effects = report.counters.get("effects", {})
    once = [f"{ref}: no provider-side create" for ref in refs if ref not in effects]
    once += [
        f"{ref}: {e['create']} creates, {e['confirm']} confirms"
        for ref, e in sorted(effects.items())
        if e["create"] != 1 or e["confirm"] != 1
    ]
    once += [
        f"{ref}: provider effect for an unknown reference"
        for ref in effects
        if ref not in set(refs)
    ]
    problems["exactly one create (and confirm) per reference"] = once

    lost = [f"{ref}: no record" for ref in refs if ref not in records]
    for outage in report.outages:
        lost += [f"{ref}: missing after the Redis restart" for ref in outage.missing_after]
    keys = sum(1 for _ in ledger.redis.scan_iter(match=record_pattern(report.prefix), count=1000))
    if keys != len(refs):
        lost.append(f"{keys} {record_pattern(report.prefix)} keys for {len(refs)} submitted")
    problems["no record lost"] = lost

    stuck = []
    pipe = ledger.redis.pipeline(transaction=False)
    ordered = list(records.values())
    for r in ordered:
        pipe.zscore(TIMERS, r.client_reference)
        pipe.sismember(state_key(r.state), r.client_reference)
    answers = pipe.execute()
    for r, timer, indexed in zip(ordered, answers[::2], answers[1::2], strict=True):
        if r.state not in FINAL_STATES and r.state != State.NEEDS_ATTENTION and timer is None:
            stuck.append(f"{r.client_reference}: {r.state} without a timer")
        if r.state in FINAL_STATES and timer is not None:
            stuck.append(f"{r.client_reference}: final but still timed")
        if not indexed:
            stuck.append(f"{r.client_reference}: not in {state_key(r.state)}")
    for state in (State.CREATING, State.CONFIRMING):
        members = cast(set[str], ledger.redis.smembers(state_key(state)))  # decoded responses
        left = [m for m in members if m.startswith(report.prefix)]
        stuck += [f"{ref}: left in {state}" for ref in sorted(left)]
    problems["no record stuck"] = stuck

    problems["history follows the transition table"] = [
        p for r in records.values() for p in check_history(r)
    ]
    return problems
