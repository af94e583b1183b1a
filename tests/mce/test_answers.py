"""How the client reads an answer: a total deadline, a size cap, and the envelope deciding.

Against the simulator over real HTTP (in this process, so the memory of a call is measurable):
a trickled answer ends in a typed timeout within one call deadline, whatever phase it stalls in;
an answer over the cap is a protocol error read in bounded memory; an HTTP 200 whose envelope
carries an error is mapped by the same function as a 4xx/5xx; every request sent is counted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from devstack.sandbox_admin import SandboxAdmin
from refunds.context import Context
from refunds.errors import (
    MceNotFoundError,
    McePermanentError,
    MceProtocolError,
    MceServerError,
    MceTimeoutError,
    MceTransientError,
    MceUnprocessableError,
)
from refunds.mce.client import idempotency_key
from tests.steps.conftest import make_context

MIB = 1 << 20
#: The answer switches all off (``configure`` overlays, so each case names every one).
PLAIN_ANSWER = {
    "trickle_bytes": 0,
    "answer_size_bytes": 0,
    "endless_answer": False,
    "envelope_error_code": None,
}
#: What a call may overrun its deadline by: the watchdog's wake-up and the unwinding of the read.
SLACK = 0.75


def _create(ctx: Context, sandbox: SandboxAdmin, ref: str) -> object:
    sandbox.flag([f"tx-{ref}"])
    return ctx.client.create(
        original_transaction_type=1,
        original_transaction_id=f"tx-{ref}",
        client_reference=ref,
        key=idempotency_key("create", ref),
    )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {field}")


def _peak_growth_mib(call: object) -> float:
    """Peak resident memory this process gained while ``call`` ran, in MiB (Linux: the peak is
    reset through /proc/self/clear_refs, so an earlier test's peak does not hide this one's)."""
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    try:
        call()  # type: ignore[operator]
    finally:
        peak = _status_kib("VmHWM")
    return (peak - before) / 1024


def test_a_trickled_answer_ends_in_a_typed_timeout_within_one_call_deadline(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    # One byte every 100 ms, the head included: every read gets a byte long before the read
    # timeout, so only a deadline for the whole exchange can end it.
    sandbox.configure(trickle_bytes=1, trickle_interval_ms=100, fault_operations=["create"])
    deadline = ctx.settings.http_deadline
    started = time.monotonic()
    with pytest.raises(MceTimeoutError) as caught:
        _create(ctx, sandbox, "trickled-1")
    took = time.monotonic() - started
    assert deadline - 0.1 <= took <= deadline + SLACK, took
    assert isinstance(caught.value, MceTransientError)
    assert caught.value.operation == "create"
    assert f"within {deadline:g}s" in caught.value.message
    print(f"\ntrickled Create: MceTimeoutError after {took:.2f}s (deadline {deadline:g}s)")


def test_a_body_that_trickles_after_a_prompt_head_ends_at_the_deadline(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    # The head comes at once, then the body at 20 KiB/s without end: the cap (1 MiB) is 50 s
    # away, the deadline is not.
    sandbox.configure(
        trickle_bytes=2048, trickle_interval_ms=100, endless_answer=True, fault_operations=["get"]
    )
    started = time.monotonic()
    with pytest.raises(MceTimeoutError):
        ctx.client.get(client_reference="slow-body")
    assert time.monotonic() - started <= ctx.settings.http_deadline + SLACK


def test_an_answer_of_100_mib_is_refused_in_bounded_memory(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(answer_size_bytes=100 * MIB, fault_operations=["create"])
    caught: list[Exception] = []

    def call() -> None:
        try:
            _create(ctx, sandbox, "huge-1")
        except MceProtocolError as exc:
            caught.append(exc)

    grew = _peak_growth_mib(call)
    assert caught, "a 100 MiB answer must be refused"
    assert f"{100 * MIB} bytes over the {MIB}-byte cap" in caught[0].message
    assert grew < 50, f"the call grew the process by {grew:.1f} MiB"
    print(f"\n100 MiB answer: refused, process peak grew {grew:.1f} MiB")


def test_a_body_that_never_ends_stops_at_the_cap_in_bounded_memory(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    # No Content-Length to refuse up front: the reader itself must stop at the cap.
    sandbox.configure(endless_answer=True, fault_operations=["get"])
    caught: list[Exception] = []

    def call() -> None:
        try:
            ctx.client.get(client_reference="endless")
        except MceProtocolError as exc:
            caught.append(exc)

    started = time.monotonic()
    grew = _peak_growth_mib(call)
    assert caught, "an endless answer must be refused"
    assert f"over the {MIB}-byte cap" in caught[0].message
    assert time.monotonic() - started < ctx.settings.http_deadline
    assert grew < 50, f"the call grew the process by {grew:.1f} MiB"
    print(f"\nendless answer: refused at the cap, process peak grew {grew:.1f} MiB")


def test_the_answer_cap_is_a_setting(redis_db: str, sandbox: SandboxAdmin) -> None:
    ctx = make_context(redis_db, sandbox, http_max_answer_bytes=4096)
    sandbox.configure(answer_size_bytes=5000, fault_operations=["get"])
    with pytest.raises(MceProtocolError, match="5000 bytes over the 4096-byte cap"):
        ctx.client.get(client_reference="capped")
    sandbox.configure(answer_size_bytes=4000)
    with pytest.raises(MceNotFoundError):  # under the cap: read, and MCE's answer counts
        ctx.client.get(client_reference="capped")


def test_a_business_code_in_a_200_envelope_is_permanent_with_the_providers_words(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(
        envelope_error_code="CRYPTO_REFUND_NOT_PENDING",
        envelope_error_msg="no pending refund for this transaction",
        fault_operations=["create"],
    )
    with pytest.raises(MceUnprocessableError) as caught:
        _create(ctx, sandbox, "env-business")
    error = caught.value
    assert isinstance(error, McePermanentError)
    assert (error.status, error.code) == (200, "CRYPTO_REFUND_NOT_PENDING")
    assert error.msg == "no pending refund for this transaction"
    assert error.log_id and len(error.log_id) == 16
    assert error.as_dict()["msg"] == "no pending refund for this transaction"
    assert "no pending refund for this transaction" in str(error)


def test_a_500_code_in_a_200_envelope_is_transient_with_the_providers_words(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    sandbox.configure(
        envelope_error_code=500, envelope_error_msg="upstream ledger busy", fault_operations=["get"]
    )
    with pytest.raises(MceServerError) as caught:
        ctx.client.get(client_reference="env-500")
    error = caught.value
    assert (error.code, error.msg) == ("500", "upstream ledger busy")
    assert error.log_id
    recorded = error.as_dict()
    assert (recorded["code"], recorded["msg"], recorded["logId"]) == (
        "500",
        "upstream ledger busy",
        error.log_id,
    )


def test_every_request_sent_is_counted_whatever_its_outcome(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    client = ctx.client
    outcomes: list[str] = []
    for switches in (
        {"trickle_bytes": 1, "trickle_interval_ms": 50},
        {"answer_size_bytes": 2 * MIB},
        {"endless_answer": True},
        {"envelope_error_code": 503},
        {},
    ):
        sandbox.configure(fault_operations=["get"], **{**PLAIN_ANSWER, **switches})
        try:
            client.get(client_reference="counted")
        except (MceTransientError, McePermanentError) as exc:
            outcomes.append(type(exc).__name__)
    ctx.stats.flush()
    counted = {outcome: n for (op, outcome), n in ctx.stats.calls().items() if op == "get"}
    assert outcomes == [
        "MceTimeoutError",
        "MceProtocolError",
        "MceProtocolError",
        "MceServerError",
        "MceNotFoundError",
    ]
    assert counted == {"timeout": 1, "oversized": 2, "200": 1, "404": 1}
    assert sum(counted.values()) == sandbox.calls()["get"] == 5


class _SoftLimit(Exception):  # noqa: N818 - stands for Celery's SoftTimeLimitExceeded
    """Raised from a signal handler mid-call, as Celery's soft time limit is."""


def test_a_call_interrupted_by_the_soft_limit_is_still_counted(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    client = ctx.client
    sandbox.configure(trickle_bytes=1, trickle_interval_ms=100, fault_operations=["get"])

    def interrupt(_signum: int, _frame: object) -> None:
        raise _SoftLimit

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(_SoftLimit):
            client.get(client_reference="interrupted")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    ctx.stats.flush()
    counted = {outcome: n for (op, outcome), n in ctx.stats.calls().items() if op == "get"}
    assert counted == {"interrupted": 1}
    assert sandbox.calls()["get"] == 1
