"""The step lease setting (issue 11, recovery in seconds): bounds and its place below the lease."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.settings import load_settings


def test_step_lease_defaults_to_six_seconds() -> None:
    assert load_settings(profile="sandbox").step_lease_seconds == 6.0


def test_step_lease_must_be_below_the_dispatch_lease() -> None:
    with pytest.raises(ConfigError, match="REFUNDS_STEP_LEASE_SECONDS must be below"):
        load_settings(
            profile="sandbox",
            step_lease_seconds=30,
            lease_seconds=25,
            task_soft_time_limit=20,
            task_time_limit=24,
            http_connect_timeout=1,
            http_read_timeout=5,
        )


@pytest.mark.parametrize("seconds", [0.5, 61])
def test_step_lease_outside_one_to_sixty_seconds_is_refused(seconds: float) -> None:
    with pytest.raises(ConfigError):
        load_settings(profile="sandbox", step_lease_seconds=seconds)
