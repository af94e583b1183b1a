"""The server's pure pieces: the accept-error filter's rate limit, the connection cap's budget."""

from __future__ import annotations

import logging

import pytest

from refunds.web.server import (
    ACCEPT_ERROR_PREFIX,
    NOFILE_RESERVE,
    AcceptErrorFilter,
    ServerLimits,
    connection_cap,
)


def accept_error() -> logging.LogRecord:
    error = OSError(24, "Too many open files")
    return logging.LogRecord(
        "asyncio",
        logging.ERROR,
        __file__,
        1,
        ACCEPT_ERROR_PREFIX + "\nsocket: <x>",
        (),
        (OSError, error, None),
    )


def test_one_accept_error_line_per_window_saying_how_many_were_held_back() -> None:
    gate = AcceptErrorFilter(every=3600)
    passed = [r for r in (accept_error() for _ in range(5000)) if gate.filter(r)]
    assert len(passed) == 1
    line = passed[0].getMessage()
    assert "Too many open files" in line
    assert "\n" not in line
    assert passed[0].exc_info is None
    gate.every = 0  # the window is over: the next error passes and counts the held-back ones
    (after,) = [r for r in [accept_error()] if gate.filter(r)]
    assert "(4999 held back before this)" in after.getMessage()


def test_other_asyncio_records_pass_untouched() -> None:
    gate = AcceptErrorFilter(every=3600)
    record = logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 1, "Task was destroyed", (), None
    )
    assert gate.filter(record)
    assert gate.filter(record)
    assert record.msg == "Task was destroyed"


def test_the_cap_leaves_the_reserve_below_the_open_files_limit() -> None:
    assert connection_cap(ServerLimits(), 1024) == 1024 - NOFILE_RESERVE
    assert connection_cap(ServerLimits(max_connections=50), 1024) == 50


@pytest.mark.parametrize("seconds", [0, -1, 60.5, 3600])
def test_the_read_deadline_is_at_most_a_minute(seconds: float) -> None:
    with pytest.raises(ValueError, match="read deadline"):
        ServerLimits(read_deadline=seconds)
