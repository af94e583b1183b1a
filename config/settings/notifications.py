"""Telling merchant apps each final outcome: a Celery task on their queue, a signed HTTP callback,
or both, retried until delivered or given up as a dead letter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from config.settings.common import Rule, check_url

if TYPE_CHECKING:
    from config.settings.model import Settings

# The pipeline's own Celery queues (config/celery.py; tests/unit check the two lists agree). A
# notification task published to one of them would be taken by our own worker and rejected.
PIPELINE_QUEUES = frozenset({"refunds.provider", "refunds.timers", "refunds.notify"})
DEFAULT_NOTIFY_QUEUE = "merchant.notifications"


class NotificationSettings(BaseModel):
    """The outcome channels (task, callback) and their delivery retries."""

    notify_task: str | None = Field(
        None,
        validation_alias="REFUNDS_NOTIFY_TASK",
        description="a Celery task name sent each final outcome on the same broker",
    )
    # The queue the task channel publishes to: the merchant app's, never one our workers consume
    # (checked below), or our worker would take the message and reject it as an unknown task.
    notify_queue: str = Field(
        DEFAULT_NOTIFY_QUEUE,
        validation_alias="REFUNDS_NOTIFY_QUEUE",
        description="the queue that task is published to: the merchant worker's, never one of "
        "the pipeline's own",
    )
    notify_publish_timeout: float = Field(
        5.0,
        gt=0,
        le=30,
        validation_alias="REFUNDS_NOTIFY_PUBLISH_TIMEOUT",
        description="seconds the broker has to accept a notification (below the soft time limit)",
    )
    # Delivery (either channel) is retried with capped exponential backoff for this long after
    # the first failure, then the entry becomes a dead letter (refunds notifications dead/replay).
    notify_give_up_after: float = Field(
        24 * 3600.0,
        gt=0,
        validation_alias="REFUNDS_NOTIFY_GIVE_UP_AFTER",
        description="how long a failing notification is retried before it becomes a dead letter",
    )
    notify_retry_base_seconds: float = Field(
        0.5,
        gt=0,
        validation_alias="REFUNDS_NOTIFY_RETRY_BASE_SECONDS",
        description="first backoff between delivery attempts, seconds",
    )
    notify_retry_max_seconds: float = Field(
        600.0,
        gt=0,
        le=3600,
        validation_alias="REFUNDS_NOTIFY_RETRY_MAX_SECONDS",
        description="cap of the backoff between delivery attempts, seconds",
    )
    callback_url: str | None = Field(
        None,
        validation_alias="REFUNDS_CALLBACK_URL",
        description="the merchant's URL for a signed HTTP POST of each final outcome",
    )
    callback_secret: SecretStr | None = Field(
        None,
        validation_alias="REFUNDS_CALLBACK_SECRET",
        description="the key that signs callbacks (secret; required with REFUNDS_CALLBACK_URL)",
    )
    callback_timeout: float = Field(
        5.0,
        gt=0,
        le=60,
        validation_alias="REFUNDS_CALLBACK_TIMEOUT",
        description="callback request timeout, seconds (below the soft time limit)",
    )

    @field_validator("notify_queue", mode="before")
    @classmethod
    def _blank_notify_queue_is_default(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return DEFAULT_NOTIFY_QUEUE
        return value.strip() if isinstance(value, str) else value

    @field_validator("notify_queue")
    @classmethod
    def _notify_queue_not_ours(cls, value: str) -> str:
        if value in PIPELINE_QUEUES:
            raise ValueError(
                f"{value!r} is one of the pipeline's own queues "
                f"({', '.join(sorted(PIPELINE_QUEUES))}): our workers would consume the "
                "notification and reject it as an unknown task;"
                f" use the merchant app's queue (default {DEFAULT_NOTIFY_QUEUE!r})"
            )
        return value

    @field_validator("callback_url", mode="before")
    @classmethod
    def _blank_callback_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("callback_url")
    @classmethod
    def _callback_is_a_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value.strip(), ("https", "http"), "https://shop.example/refund-outcomes")
            return value.strip()
        return value


def _callback_is_signed(s: Settings) -> Iterator[str]:
    if s.callback_url and (
        s.callback_secret is None or not s.callback_secret.get_secret_value().strip()
    ):
        yield "REFUNDS_CALLBACK_URL needs REFUNDS_CALLBACK_SECRET to sign callbacks"


def _backoff_ordered(s: Settings) -> Iterator[str]:
    if s.notify_retry_base_seconds > s.notify_retry_max_seconds:
        yield "REFUNDS_NOTIFY_RETRY_BASE_SECONDS must not exceed REFUNDS_NOTIFY_RETRY_MAX_SECONDS"


def _delivery_fits_the_soft_limit(s: Settings) -> Iterator[str]:
    # A delivery that Celery's soft limit interrupts leaves its entry to the lease (minutes).
    for name, seconds in (
        ("REFUNDS_CALLBACK_TIMEOUT", s.callback_timeout),
        ("REFUNDS_NOTIFY_PUBLISH_TIMEOUT", s.notify_publish_timeout),
    ):
        if seconds >= s.task_soft_time_limit:
            yield f"{name} must be below REFUNDS_TASK_SOFT_TIME_LIMIT"


RULES = (
    Rule(("callback_url", "callback_secret"), _callback_is_signed),
    Rule(("notify_retry_base_seconds", "notify_retry_max_seconds"), _backoff_ordered),
    Rule(
        ("callback_timeout", "notify_publish_timeout", "task_soft_time_limit"),
        _delivery_fits_the_soft_limit,
    ),
)
