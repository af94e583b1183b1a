"""Pure decisions of the steps: where provider news puts a refund, backoff, idempotency keys."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from config.settings import load_settings
from refunds.context import Context
from refunds.mce.client import idempotency_key
from refunds.models import State
from refunds.steps import state_for_status


@pytest.mark.parametrize(
    ("current", "status", "expected"),
    [
        (State.CREATING, 1, State.CREATED),
        (State.CREATING, 2, State.PROCESSING),  # a duplicate answered with a confirmed refund
        (State.CREATING, 3, State.COMPLETED),
        (State.CONFIRMING, 2, State.PROCESSING),
        (State.PROCESSING, 2, State.PROCESSING),
        (State.PROCESSING, 1, State.PROCESSING),  # never backwards
        (State.PROCESSING, 9, State.PROCESSING),  # unknown: keep following
        (State.PROCESSING, None, State.PROCESSING),
        (State.CREATING, 9, State.CREATED),
        (State.PROCESSING, 4, State.FAILED),
        (State.PROCESSING, 5, State.REJECTED),
        (State.COMPLETED, 4, State.COMPLETED),  # final is sticky
    ],
)
def test_state_for_status(current: State, status: int | None, expected: State) -> None:
    assert state_for_status(current, status) == expected


def pipeline(**settings: Any) -> Context:
    s = load_settings(profile="sandbox", **settings)
    return Context(settings=s, ledger=None, client=None, stats=None, rng=random.Random(7))  # type: ignore[arg-type]


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    p = pipeline(retry_base_seconds=0.5, retry_max_seconds=8)
    p.jitter = lambda ceiling: ceiling  # type: ignore[method-assign]  # pin the jitter to its top
    assert [p.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    p = pipeline(retry_base_seconds=0.5, retry_max_seconds=8)
    samples = [p.backoff(4) for _ in range(200)]
    assert all(0.05 <= d <= 4.0 for d in samples)
    assert len({round(d, 3) for d in samples}) > 50  # jittered, not constant


def test_idempotency_keys_are_stable_per_operation_and_reference() -> None:
    key = idempotency_key("create", "ref-1")
    assert key == idempotency_key("create", "ref-1")
    assert uuid.UUID(key).version == 5
    assert key != idempotency_key("confirm", "ref-1")
    assert key != idempotency_key("create", "ref-2")
    assert key != idempotency_key("create", "ref-1", generation=1)
    # Pinned: a change of namespace would break idempotency across a deploy.
    assert key == str(uuid.uuid5(uuid.UUID("6f1c2a52-6d0b-4b8e-9a57-2f6a3c1f9e10"), "create:ref-1"))
