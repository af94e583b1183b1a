"""Nothing lost, nothing twice, at scale: refunds under provider faults while processes die.

Faults on the provider side (503, 429 with Retry-After, lost answers, answers slower than our read
timeout, revoked tokens) while worker processes are SIGKILLed and restarted, and Redis itself is
SIGKILLed and restarted from its AOF. Afterwards every refund is final (completed), each reference
had exactly one provider-side create, no record was lost or left without a timer, and every
history follows the transition table. Run with ``-s`` to see the run's summary.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosPlan, ChaosRun

CI_PLAN = ChaosPlan(
    name="ci",
    refunds=80,
    workers=2,
    concurrency=4,
    waves=8,
    submit_seconds=20.0,
    chaos_seconds=28.0,
    kill_every=(2.5, 5.0),
    redis_kills=1,
    timeout=90.0,
)


def long_plan() -> ChaosPlan:
    """The long run: ``CHAOS_REFUNDS`` (1000), ``CHAOS_WORKERS`` (3), ``CHAOS_TIMEOUT`` (900 s)."""
    refunds = int(os.environ.get("CHAOS_REFUNDS", "1000"))
    return ChaosPlan(
        name="long",
        refunds=refunds,
        workers=int(os.environ.get("CHAOS_WORKERS", "3")),
        concurrency=4,
        waves=20,
        submit_seconds=60.0,
        chaos_seconds=90.0,
        kill_every=(2.0, 5.0),
        redis_kills=3,
        timeout=float(os.environ.get("CHAOS_TIMEOUT", "900")),
    )


def run_and_check(plan: ChaosPlan, workdir: Path, seed: int, prefix: str) -> None:
    run = ChaosRun(plan, workdir, seed, prefix)
    report = run.run()
    print("\n" + report.summary())
    assert report.ok, report.summary() + "\n" + run.diagnostics()


@pytest.mark.timeout(150)
def test_refunds_under_faults_and_kills_are_all_completed_once_and_none_lost(
    chaos_dir: Path, chaos_seed: int, prefix: str
) -> None:
    """About 80 refunds, 2 workers, one Redis SIGKILL: part of every test run (30-50 s)."""
    run_and_check(CI_PLAN, chaos_dir, chaos_seed, prefix)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_thousand_refunds_under_faults_and_kills_are_all_completed_once_and_none_lost(
    chaos_dir: Path, chaos_seed: int, prefix: str
) -> None:
    """1,000 refunds (``CHAOS_REFUNDS``), 3 workers, three Redis SIGKILLs: ``--run-slow``."""
    run_and_check(long_plan(), chaos_dir, chaos_seed, prefix)
