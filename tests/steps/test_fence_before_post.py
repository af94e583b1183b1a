"""The step lease guards the provider call: a fence is checked right before every POST.

When a worker's heartbeat writes fail (a Redis blip for that process), its short lease lapses
and a second worker takes the refund. The first worker's Create answer then arrives and it goes
on to Confirm: right before that POST it reads its lease in Redis, finds it is not its own any
more, and abandons the call; two POSTs never run at once.
"""

from __future__ import annotations

import threading
import time

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.steps import lease
from refunds.steps.result import StepResult
from tests.steps.conftest import make_context, received


def test_a_worker_whose_lease_was_taken_does_not_send_its_confirm(
    redis_db: str, sandbox: SandboxAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_context(redis_db, sandbox, step_lease_seconds=1)  # confirms inline
    second = make_context(redis_db, sandbox)
    received(first, sandbox, "fenced")
    # The first worker's heartbeat writes never land (as when its Redis connection fails).
    monkeypatch.setattr(lease._Heartbeat, "beat", lambda self: setattr(self, "last", 1e18))
    sandbox.configure(slow_rate=1.0, slow_ms=1800, fault_operations=["create"])
    outcome: list[StepResult] = []
    worker = threading.Thread(target=lambda: outcome.append(steps.create(first, "fenced")))
    worker.start()
    time.sleep(1.3)  # the first worker's 1 s lease lapsed while its Create is in flight
    taken, _ = second.ledger.try_lock("fenced", 30)
    assert taken is not None  # the second worker holds the refund now
    worker.join(timeout=10)
    assert sandbox.effects("fenced") == {"create": 1, "confirm": 0}
    (result,) = outcome
    assert "lease" in result.note


def test_a_heartbeat_that_has_not_succeeded_for_a_lease_stops_the_step_before_its_post(
    redis_db: str, sandbox: SandboxAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No one took the lease, but the heartbeat has failed for longer than a lease: the step
    cannot know, and does not call."""
    first = make_context(redis_db, sandbox, step_lease_seconds=1)

    def failing(self: lease._Heartbeat) -> None:  # every renewal fails, as in a Redis blip
        self.last = time.monotonic()
        self.failed()

    received(first, sandbox, "stale-beat")
    monkeypatch.setattr(lease._Heartbeat, "beat", failing)
    sandbox.configure(slow_rate=1.0, slow_ms=1500, fault_operations=["create"])
    result = steps.create(first, "stale-beat")
    assert sandbox.effects("stale-beat") == {"create": 1, "confirm": 0}
    assert "lease" in result.note
