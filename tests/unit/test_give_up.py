"""Give-up is time-based (issue 11): a streak of transient failures, not a count of attempts."""

from __future__ import annotations

import warnings

import pytest

from config.errors import ConfigError
from config.settings import load_settings, parse_duration
from refunds.decisions import FAILING_SINCE, decide_failure
from refunds.policy import Policy

DAY = Policy(give_up_after=24 * 3600.0)


def fail(
    last_error: dict[str, object] | None,
    *,
    retryable: bool = True,
    now: float = 1000.0,
    backoff: float = 2.0,
    retry_after: float | None = None,
    policy: Policy = DAY,
):
    return decide_failure(
        policy,
        last_error=last_error,
        retryable=retryable,
        code="SERVICE_UNAVAILABLE",
        backoff=backoff,
        retry_after=retry_after,
        now=now,
    )


def test_a_first_failure_starts_the_streak_and_retries_with_the_backoff() -> None:
    d = fail(None, now=1000.0, backoff=2.0)
    assert (d.retry, d.delay, d.failing_since) == (True, 2.0, 1000.0)


def test_the_streak_start_is_kept_across_failures() -> None:
    d = fail({"code": "X", FAILING_SINCE: 400.0}, now=1000.0)
    assert (d.retry, d.failing_since) == (True, 400.0)


def test_an_error_without_a_streak_start_starts_one_now() -> None:
    # A last_error written before this version (no failingSince) restarts the clock, never stops.
    assert fail({"code": "X"}, now=1000.0).failing_since == 1000.0


def test_a_15_minute_outage_with_hundreds_of_failures_keeps_retrying() -> None:
    start = 10_000.0
    last: dict[str, object] | None = None
    for i in range(300):  # one failure every 3 s for 15 minutes
        d = fail(last, now=start + 3 * i)
        assert d.retry, i
        last = {"code": "SERVICE_UNAVAILABLE", FAILING_SINCE: d.failing_since}
    assert last[FAILING_SINCE] == start


def test_gives_up_once_the_streak_reaches_the_limit() -> None:
    policy = Policy(give_up_after=60.0)
    assert fail({FAILING_SINCE: 1000.0}, now=1059.9, policy=policy).retry
    stop = fail({FAILING_SINCE: 1000.0}, now=1060.0, policy=policy)
    assert not stop.retry
    assert stop.reason == "gave up after 60s of failures: SERVICE_UNAVAILABLE"


def test_a_permanent_error_stops_at_once() -> None:
    d = fail(None, retryable=False, now=1000.0)
    assert (d.retry, d.reason) == (False, "provider refused: SERVICE_UNAVAILABLE")


def test_retry_after_longer_than_the_backoff_is_honoured() -> None:
    assert fail(None, backoff=0.5, retry_after=7.0).delay == 7.0
    assert fail(None, backoff=3.0, retry_after=1.0).delay == 3.0


def test_a_streak_start_in_the_future_is_clamped_to_now() -> None:
    # Another host's clock ran ahead: the streak never starts later than now.
    assert fail({FAILING_SINCE: 5000.0}, now=1000.0).failing_since == 1000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("24 h", 86400.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("0.5H", 1800.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "24x", "-5", "1h 2y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_settings_read_give_up_after_as_a_duration() -> None:
    s = load_settings(profile="sandbox", give_up_after="24 h", age_alert_after="45m")
    assert (s.give_up_after, s.age_alert_after) == (86400.0, 2700.0)
    assert Policy.from_settings(s).give_up_after == 86400.0
    defaults = load_settings(profile="sandbox")
    assert (defaults.give_up_after, defaults.age_alert_after) == (86400.0, 3600.0)
    with pytest.raises(ConfigError, match="GIVE_UP_AFTER: not a duration"):
        load_settings(profile="sandbox", give_up_after="soon")


def test_max_attempts_is_deprecated_with_a_message_naming_its_replacement() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_settings(profile="sandbox", max_attempts=25)
    messages = [str(w.message) for w in seen if issubclass(w.category, FutureWarning)]
    assert len(messages) == 1
    assert "REFUNDS_GIVE_UP_AFTER" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_settings(profile="sandbox")  # not set: no warning
