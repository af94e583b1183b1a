"""A step that stops a refund for a human fails its task with a typed, picklable exception."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from config.celery import celery_config
from config.settings import load_settings
from refunds.models import RefundRecord, State
from tasks.outcome import RefundStoppedError, stop_of

ERROR = {
    "type": "McePermanentError",
    "message": "refund is not pending",
    "status": 422,
    "code": "CRYPTO_REFUND_NOT_PENDING",
    "logId": "log-7f3a",
    "operation": "create",
}


def record(state: State, **more: Any) -> RefundRecord:
    base: dict[str, Any] = {
        "client_reference": "ref-1",
        "state": state,
        "original_transaction_type": 1,
        "original_transaction_id": "tx-1",
        "refund_address": "TMerchantAddr",
        "fingerprint": "fp",
        "created_at": 1_800_000_000.0,
        "updated_at": 1_800_000_030.0,
        "version": 3,
        **more,
    }
    return RefundRecord(**base)


def test_a_step_that_moved_the_refund_to_needs_attention_fails_with_code_and_log_id() -> None:
    stop = stop_of("creating", record(State.NEEDS_ATTENTION, last_error=ERROR))
    assert isinstance(stop, RefundStoppedError)
    assert (stop.code, stop.log_id, stop.status, stop.reference) == (
        "CRYPTO_REFUND_NOT_PENDING",
        "log-7f3a",
        422,
        "ref-1",
    )
    assert str(stop) == (
        "needs attention: CRYPTO_REFUND_NOT_PENDING HTTP 422 on create, logId log-7f3a "
        "(refund ref-1)"
    )
    # What the task-failed event carries to Flower is repr(exc): the code is in it too.
    assert "CRYPTO_REFUND_NOT_PENDING" in repr(stop)
    assert "log-7f3a" in repr(stop)


def test_the_stop_pickles_whole_and_carries_no_provider_message() -> None:
    stop = stop_of(None, record(State.NEEDS_ATTENTION, last_error=ERROR))
    assert stop is not None
    back = pickle.loads(pickle.dumps(stop))  # noqa: S301 - our own bytes, as Celery pickles
    assert type(back) is RefundStoppedError
    assert str(back) == str(stop)
    assert back.args == stop.args
    assert "refund is not pending" not in str(stop) + repr(stop)


def test_a_stop_without_a_provider_error_says_so() -> None:
    stop = stop_of("processing", record(State.NEEDS_ATTENTION))
    assert stop is not None
    assert str(stop) == "needs attention: no code, logId none (refund ref-1)"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("awaiting_approval", State.AWAITING_APPROVAL),  # held for approval: not a failure
        ("creating", State.AWAITING_APPROVAL),
        ("processing", State.PROCESSING),
        ("needs_attention", State.NEEDS_ATTENTION),  # a stale message meets an old stop
    ],
)
def test_other_outcomes_are_not_stops(before: str, after: State) -> None:
    assert stop_of(before, record(after, last_error=ERROR)) is None
    assert stop_of(before, None) is None


def test_a_failed_step_task_is_acknowledged_not_redelivered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFUNDS_PROFILE", "sandbox")  # worker.app builds its settings on import
    config = celery_config(load_settings(profile="sandbox"))
    # Celery's default (True) acks a task that raised; False would requeue it for ever.
    assert config.get("task_acks_on_failure_or_timeout", True) is True
    from tasks.refunds import TASKS  # noqa: PLC0415 - after the env it needs is set

    for task in TASKS.values():
        assert RefundStoppedError in task.throws
        assert not getattr(task, "autoretry_for", ())
