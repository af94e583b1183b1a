"""What a worker's liveness beat names: fenced step messages only, the newest fence per refund.

Pure logic of ``worker.liveness`` (the beat itself runs against a real Redis and a real worker in
tests/integration/test_worker_liveness.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.liveness import fenced, held_now


@dataclass
class Request:
    """The two attributes the beat reads of Celery's ``Request``."""

    name: str
    args: Any


def test_a_fenced_step_message_is_named_with_its_fence() -> None:
    assert fenced(Request("refunds.create", ["r1", 3])) == ("r1", 3)
    assert fenced(Request("refunds.poll", ("r2", 7))) == ("r2", 7)


def test_messages_that_hold_no_dispatch_are_not_named() -> None:
    assert fenced(Request("refunds.tick", [])) is None
    assert fenced(Request("notifications.deliver", ["task:r1"])) is None
    assert fenced(Request("refunds.create", ["r1"])) is None  # a nudge: its timer covers it
    assert fenced(Request("refunds.create", ["r1", None])) is None
    assert fenced(Request("refunds.create", ["r1", True])) is None
    assert fenced(Request("refunds.create", "('r1', 3)")) is None
    assert fenced(object()) is None


def test_the_newest_fence_held_for_a_refund_is_the_one_named() -> None:
    requests = [
        Request("refunds.create", ["r1", 3]),
        Request("refunds.poll", ["r1", 5]),
        Request("refunds.confirm", ["r2", 2]),
        Request("refunds.tick", []),
    ]
    assert held_now(requests) == {"r1": 5, "r2": 2}
