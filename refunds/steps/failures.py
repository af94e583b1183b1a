"""Failures: what a step writes when its provider call failed.

Transient errors (network, timeouts, 429, 5xx, gateway pages) and authentication errors (after
the client's one replay) are recorded and retried on the timer with capped exponential backoff and
full jitter, honouring ``Retry-After``, until a streak of failures has lasted
``REFUNDS_GIVE_UP_AFTER`` (``decisions.decide_failed_call``); then the refund goes to
``needs_attention``. Throttles (our own pacing, a 429's push-back, the credentials pause) are not
attempts and never start a streak. Permanent ones (400/403/404/422 business codes) go to
``needs_attention`` at once, with the provider's ``code`` and ``logId`` in ``last_error``; a Get's
not-found shortly after Create is the provider's read lag, retried for a while.
"""

from __future__ import annotations

import logging

from refunds.context import Context
from refunds.decisions import decide_failed_call, within_read_lag
from refunds.errors import MceError, McePermanentError, MceThrottledError, MceTransientError
from refunds.kyt.outcomes import not_refundable
from refunds.mce.contract import Code
from refunds.models import RefundRecord, now
from refunds.steps.lease import write
from refunds.steps.result import StepResult, log_extra

log = logging.getLogger("refunds.steps")


def failed_attempt(
    p: Context, record: RefundRecord, exc: MceError, *, counted: bool = True
) -> StepResult:
    """Retry on the timer, or stop in ``needs_attention`` with the provider's code.

    ``counted``: whether ``record.attempts`` already includes this attempt (create and confirm
    count it before the call, so a crash mid-call still counts; a poll counts it here).
    """
    attempts = record.attempts if counted else record.attempts + 1
    if isinstance(exc, MceThrottledError):
        # Never sent: not an attempt. Back on the timer for when the cluster's pace allows it.
        delay = exc.retry_after or p.settings.rate_limit_default_pause
        new = write(
            p,
            record,
            record.state,
            "",
            fields={"attempts": max(0, attempts - 1)},
            timer="set",
            due_in=delay,
        ).record
        return StepResult(f"throttled for {delay:.2f}s", new)
    code = exc.code or type(exc).__name__
    p.stats.record_error(code)
    # --- KYT intake: a rule-made refund the provider has no pending refund for ends here.
    final = not_refundable(record, operation=exc.operation, code=exc.code, error=exc.as_dict())
    if final is not None:
        log.warning("not refundable: %s", final.reason, extra=log_extra(record, code=exc.code))
        outbox = p.policy.outbox_members(record.client_reference)
        new = write(
            p, record, final.target, final.reason, fields=final.fields, timer="clear", outbox=outbox
        ).record
        return StepResult(final.note, new)
    # --- end KYT intake
    at = now()
    read_lag = (
        exc.code == Code.NOT_FOUND
        and exc.operation == "get"
        and within_read_lag(p.policy, record, now=at)
    )
    decision = decide_failed_call(
        record,
        p.policy,
        error=exc.as_dict(),
        retryable=(
            isinstance(exc, MceTransientError) or not isinstance(exc, McePermanentError) or read_lag
        ),
        code=code,
        attempts=attempts,
        backoff=p.backoff(attempts),
        retry_after=exc.retry_after,
        now=at,
    )
    extra = log_extra(
        record,
        operation=exc.operation,
        status=exc.status,
        code=exc.code,
        log_id=exc.log_id,
        attempt=attempts,
    )
    if decision.due_in is not None:
        delay = decision.due_in
        log.warning("%s; retrying in %.2fs", exc, delay, extra={**extra, "delay": round(delay, 3)})
    else:
        log.error("needs attention: %s (%s)", decision.reason, exc, extra=extra)
    new = write(
        p,
        record,
        decision.target,
        decision.reason,
        fields=decision.fields,
        timer=decision.timer,
        due_in=decision.due_in,
    ).record
    return StepResult(decision.note, new)
