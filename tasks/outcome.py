"""A step that stops a refund for a human fails its Celery task, so Flower shows it as FAILURE.

Why: the steps record every outcome in the ledger and answer a note, so a refund that MCE refused
used to end in a SUCCESS task reading ``'needs attention'``; Flower then showed "Failed 0" while
refunds waited for an operator. The ledger write comes first (the refund is in
``needs_attention``, with the provider's ``code`` and ``logId`` in ``last_error``); only then
does the task raise :class:`RefundStoppedError`, whose text names the code and the logId, so
Flower's task list, its Failed filter and the worker's task-failed event all say which refund
stopped and why.

The exception is an expected outcome (``Task.throws``): the worker logs it as a line, not a
traceback; the message is still acknowledged (``task_acks_on_failure_or_timeout`` stays at its
default, True) and no task retries on it (none has ``autoretry_for``), so it is never redelivered.
It carries only the reference, the HTTP status, the provider's code, its logId and the operation:
no token, no secret, no provider message text. Waiting for an approval is not a failure.
"""

from __future__ import annotations

from typing import Any

from refunds.models import RefundRecord, State


class RefundStoppedError(Exception):
    """The step stopped the refund for a human (``needs_attention``); the ledger holds why."""

    def __init__(
        self,
        reference: str,
        code: str | None,
        log_id: str | None,
        status: int | None = None,
        operation: str | None = None,
    ) -> None:
        # Every argument goes to Exception.args: the exception pickles and repr()s (what Celery's
        # task-failed event carries to Flower) with all of them.
        super().__init__(reference, code, log_id, status, operation)
        self.reference = reference
        self.code = code
        self.log_id = log_id
        self.status = status
        self.operation = operation

    def __str__(self) -> str:
        status = "" if self.status is None else f" HTTP {self.status}"
        operation = f" on {self.operation}" if self.operation else ""
        return (
            f"needs attention: {self.code or 'no code'}{status}{operation}, "
            f"logId {self.log_id or 'none'} (refund {self.reference})"
        )

    @classmethod
    def of(cls, record: RefundRecord) -> RefundStoppedError:
        """From the record as the step wrote it: its ``last_error`` (``MceError.as_dict``)."""
        error: dict[str, Any] = record.last_error or {}
        status = error.get("status")
        return cls(
            record.client_reference,
            _text(error.get("code")),
            _text(error.get("logId")),
            status if isinstance(status, int) else None,
            _text(error.get("operation")),
        )


def stop_of(before: str | None, after: RefundRecord | None) -> RefundStoppedError | None:
    """The RefundStoppedError to raise when this step moved the refund into ``needs_attention`` (it
    was not there before); None otherwise. A refund already waiting for a human, met again by a
    stale or duplicate message, is not a new stop."""
    if after is None or after.state != State.NEEDS_ATTENTION:
        return None
    if before == str(State.NEEDS_ATTENTION):
        return None
    return RefundStoppedError.of(after)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
