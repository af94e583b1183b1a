"""Time: how a refund is followed (polls, webhooks), retried and given up on, and the Celery
runtime's clocks (tick, leases, time limits) with the rules that keep them from trapping a step.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from config.settings.common import Rule, parse_duration

if TYPE_CHECKING:
    from config.settings.model import Settings


class TimingSettings(BaseModel):
    """Polling, retries, give-up, the scheduler tick, leases and Celery's time limits."""

    # --- following a refund: delays between Gets, the last one repeats ---
    poll_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
        validation_alias="REFUNDS_POLL_SCHEDULE",
        description="seconds between Gets while a refund is processing, comma-separated or "
        "JSON (each up to 3600); the last repeats",
    )
    # Webhook-first polling: when MCE is set up to send its webhook to this deployment's
    # receiver, the first Get waits out the window in which the webhook normally arrives, so
    # polling is the safety net for a lost delivery, not the path. Explicit, not derived from
    # MCE_WEBHOOK_SECRET: only the merchant knows where MCE's dashboard points the webhook.
    webhooks_expected: bool = Field(
        False,
        validation_alias="REFUNDS_WEBHOOKS_EXPECTED",
        description="true when MCE sends its webhook to this deployment's /webhooks/mce: "
        "polling becomes the safety net",
    )
    webhook_grace_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        validation_alias="REFUNDS_WEBHOOK_GRACE_SECONDS",
        description="with webhooks expected, the first Get of a confirmed refund waits this long",
    )
    not_found_grace_seconds: float = Field(
        120.0,
        ge=0,
        validation_alias="REFUNDS_NOT_FOUND_GRACE_SECONDS",
        description="a Get's not-found this soon after Create is read lag, retried",
    )

    # --- retries of transient errors: capped exponential backoff with full jitter ---
    retry_base_seconds: float = Field(
        0.5,
        gt=0,
        validation_alias="REFUNDS_RETRY_BASE_SECONDS",
        description="first backoff of a transient error, seconds (full jitter)",
    )
    retry_max_seconds: float = Field(
        60.0,
        gt=0,
        le=60,
        validation_alias="REFUNDS_RETRY_MAX_SECONDS",
        description="cap of the backoff of transient errors, seconds",
    )
    # Deprecated: give-up is time-based now. Still parsed so an old env file starts, with a
    # warning naming its replacement; nothing reads it.
    max_attempts: int | None = Field(
        None,
        ge=1,
        validation_alias="REFUNDS_MAX_ATTEMPTS",
        description="deprecated and ignored (a warning at start): use REFUNDS_GIVE_UP_AFTER",
    )
    give_up_after: float = Field(
        24 * 3600.0,
        gt=0,
        validation_alias="REFUNDS_GIVE_UP_AFTER",
        description="how long a streak of transient failures is retried before needs_attention: "
        "seconds or a duration (90m, 24h, 2d)",
    )
    age_alert_after: float = Field(
        3600.0,
        gt=0,
        validation_alias="REFUNDS_AGE_ALERT_AFTER",
        description="a refund in flight (not final, held or needs_attention) older than this "
        "raises the age alert: seconds or a duration",
    )
    # Confirm right after a Create in the same task, under the same lock, while the task's soft
    # time limit leaves a whole step's call budget; false: Confirm is a task of its own.
    confirm_inline: bool = Field(
        True,
        validation_alias="REFUNDS_CONFIRM_INLINE",
        description="Confirm right after Create in the same task (false: a refunds.confirm "
        "task of its own)",
    )

    # --- timers and leases ---
    tick_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        validation_alias="REFUNDS_TICK_INTERVAL",
        description="how often beat sends the scheduler tick, seconds",
    )
    tick_batch: int = Field(
        500,
        ge=1,
        validation_alias="REFUNDS_TICK_BATCH",
        description="refunds one tick claims per batch",
    )
    lease_seconds: float = Field(
        90.0,
        gt=0,
        validation_alias="REFUNDS_LEASE_SECONDS",
        description="the safety-net delay of intake and the cap of the dispatch lease; must "
        "exceed REFUNDS_TASK_TIME_LIMIT",
    )
    task_soft_time_limit: float = Field(
        45.0,
        gt=0,
        validation_alias="REFUNDS_TASK_SOFT_TIME_LIMIT",
        description="Celery's soft time limit of a step, seconds (below the hard limit)",
    )
    task_time_limit: float = Field(
        60.0,
        gt=0,
        validation_alias="REFUNDS_TASK_TIME_LIMIT",
        description="Celery's hard time limit of a step, seconds",
    )
    # A running step's lock and its refund's timer stay this far ahead, renewed every third of it
    # by the step's heartbeat: a dead worker's refund is due again within about this long.
    step_lease_seconds: float = Field(
        6.0,
        ge=1,
        le=60,
        validation_alias="REFUNDS_STEP_LEASE_SECONDS",
        description="a running step's lock and timer stay this far ahead, renewed every third "
        "of it (below REFUNDS_LEASE_SECONDS)",
    )
    # "Dispatched, not started": a step message that has not started within this long is sent
    # again with a newer fence; each further unstarted dispatch doubles it (up to 16 times).
    dispatch_lease_seconds: float = Field(
        15.0,
        ge=1,
        le=3600,
        validation_alias="REFUNDS_DISPATCH_LEASE_SECONDS",
        description="how long a dispatched step message may wait before it is sent again with "
        "a newer fence (doubling per unstarted dispatch)",
    )

    @field_validator("give_up_after", "age_alert_after", mode="before")
    @classmethod
    def _parse_durations(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("max_attempts")
    @classmethod
    def _max_attempts_deprecated(cls, value: int | None) -> int | None:
        if value is not None:
            warnings.warn(
                "REFUNDS_MAX_ATTEMPTS is deprecated and ignored: give-up is time-based now; "
                "set REFUNDS_GIVE_UP_AFTER (a duration such as 24h) instead",
                FutureWarning,  # shown by default: meant for the operator reading the log
                stacklevel=2,
            )
        return value

    @field_validator("poll_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("poll_schedule")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("needs at least one delay")
        # Poll delays are durable timer due times, not Celery countdowns, so they may be long;
        # an hour keeps every refund looked at at least hourly.
        if any(v <= 0 or v > 3600 for v in value):
            raise ValueError("delays must be > 0 and <= 3600 seconds")
        return value


def _calls_fit_the_soft_limit(s: Settings) -> Iterator[str]:
    # One provider call may need a token fetch first: two (connect + read) budgets, both with
    # the same timeouts, must end before the soft limit, or Celery interrupts a call that was
    # still allowed to wait (and the provider may apply what we gave up on).
    call = s.http_connect_timeout + s.http_read_timeout
    if 2 * call >= s.task_soft_time_limit:
        yield (
            "REFUNDS_HTTP_CONNECT_TIMEOUT + REFUNDS_HTTP_READ_TIMEOUT "
            f"({call:g} s, twice for a step that fetches a token first) must fit under "
            f"REFUNDS_TASK_SOFT_TIME_LIMIT ({s.task_soft_time_limit:g} s)"
        )


def _soft_below_hard(s: Settings) -> Iterator[str]:
    if s.task_soft_time_limit >= s.task_time_limit:
        yield "REFUNDS_TASK_SOFT_TIME_LIMIT must be below REFUNDS_TASK_TIME_LIMIT"


def _lease_outlasts_the_task(s: Settings) -> Iterator[str]:
    if s.lease_seconds <= s.task_time_limit:
        yield (
            "REFUNDS_LEASE_SECONDS must exceed REFUNDS_TASK_TIME_LIMIT, or a slow task would "
            "see its refund handed to a second worker while it still runs"
        )


def _step_lease_below_lease(s: Settings) -> Iterator[str]:
    if s.step_lease_seconds >= s.lease_seconds:
        yield "REFUNDS_STEP_LEASE_SECONDS must be below REFUNDS_LEASE_SECONDS"


RULES = (
    Rule(
        ("http_connect_timeout", "http_read_timeout", "task_soft_time_limit"),
        _calls_fit_the_soft_limit,
    ),
    Rule(("task_soft_time_limit", "task_time_limit"), _soft_below_hard),
    Rule(("lease_seconds", "task_time_limit"), _lease_outlasts_the_task),
    Rule(("step_lease_seconds", "lease_seconds"), _step_lease_below_lease),
)
