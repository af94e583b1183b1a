"""The client's tests share the steps tests' fixtures: a real Context on a private Redis database
and the simulator serving real HTTP from a thread of the test process."""

from tests.steps.conftest import ctx, sandbox, sandbox_in_process

__all__ = ["ctx", "sandbox", "sandbox_in_process"]
