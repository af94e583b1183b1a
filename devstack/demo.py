"""``refunds demo``: the whole pipeline on one machine, N refunds through it, and the numbers.

It proves the claims that matter on a laptop, with real processes: every refund reaches
``completed``, the provider saw exactly one Create per reference, calls per refund and token calls
stay low (one token shared by the cluster), and how long a refund takes. It starts a private Redis
(unless REDIS_URL is set), the sandbox simulator, worker(s) and beat as child processes, submits
through the same Producer merchant apps use (one by one, so the immediate nudge path is exercised),
follows the ledger until every refund is final, and then stops everything in order, also on Ctrl-C
or SIGTERM: children run in their own sessions, so nothing else would stop them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click
import redis
import requests
from rich.console import Console

from config.settings import (
    SANDBOX_BASE_URL,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_WEBHOOK_SECRET,
    Settings,
    load_settings,
)
from devstack.demo_env import (
    flag_example_payments,
    refuse_foreign_refunds,
    write_env_file,
)
from devstack.processes import free_port, redis_reachable, wait_for_worker
from devstack.stack import LocalStack
from devstack.wait import wait_until
from refunds.errors import ConfigError
from refunds.models import FINAL_STATES, RefundIntent, RefundRecord, State
from refunds.store.archive_queue import ArchiveQueue
from refunds.store.ledger import Ledger

POLL_SCHEDULE = "0.5,1,2"  # quick follow-ups: the sandbox completes refunds in seconds
TICK_INTERVAL = "0.5"
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 130, 143


@dataclass(frozen=True)
class Screen:
    """Where the demo shows itself, handed in by ``refunds demo`` (``refunds.cli.serve``): the CLI
    owns the consoles and the live view, and devstack never imports the CLI (no import cycle;
    pyproject's import-linter contracts).

    ``follow(ledger, refs, title, console, on_tick)`` shows ``refs`` live until every one is final;
    ``on_tick`` runs at each refresh and may raise to stop it (the deadline, a dead child).
    """

    console: Console  # progress and messages (stderr)
    stdout: Console  # the summary
    follow: Callable[[Ledger, list[str], str, Console, Callable[[], None]], object]


@dataclass(frozen=True)
class DemoOptions:
    count: int = 50
    workers: int = 1
    concurrency: int = 4
    processing_seconds: float = 2.0
    token_ttl: float = 30.0
    keep_dir: bool = False
    as_json: bool = False
    timeout_seconds: float | None = None
    webhooks: bool = True
    serve: bool = False
    web_port: int = 8000
    sandbox_port: int = 8099

    @property
    def timeout(self) -> float:
        """Generous by default: slow CI machines must not fail a healthy run."""
        if self.timeout_seconds is not None:
            return self.timeout_seconds
        return 120.0 + self.count * 0.5


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the same cleanup runs as for Ctrl-C."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C during shutdown would orphan children: finish stopping them first."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_demo(opts: DemoOptions, screen: Screen) -> int:
    """Run the demo; returns the exit code (0 only if every refund completed)."""
    console = screen.console
    started = time.monotonic()
    external = os.environ.get("REDIS_URL") or None
    # Settings first: a bad REFUNDS_* variable must stop the demo before anything starts.
    checked = load_settings(
        **_settings_overrides(external or "redis://127.0.0.1:1/0", SANDBOX_BASE_URL)
    )
    if external and not redis_reachable(external):
        raise ConfigError(
            f"REDIS_URL {checked.safe_summary()['redis_url']} is not reachable "
            "(unset it and the demo starts a private Redis)"
        )
    if external:
        refuse_foreign_refunds(external, checked.safe_summary()["redis_url"])
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="refunds-demo-")))
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    code = EXIT_FAILED
    try:
        code = _run(opts, stack, external, screen=screen, started=started)
    except _Terminated:
        console.print("demo: terminated; shutting down")
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        console.print("demo: interrupted; shutting down")
        code = EXIT_INTERRUPTED
    except (
        RuntimeError,
        TimeoutError,
        OSError,
        requests.RequestException,
        redis.RedisError,
    ) as exc:
        console.print(f"demo: [red]failed[/]: {exc}")
        code = EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        with _signals_ignored():
            console.print(
                "demo: stopping beat, web, workers, sandbox" + (", redis" if stack.redis else "")
            )
            stack.stop()
        # A failed run keeps its logs for the post-mortem; a good or deliberately stopped one
        # leaves nothing behind unless asked to.
        if code != EXIT_FAILED and not opts.keep_dir:
            shutil.rmtree(stack.workdir, ignore_errors=True)
        else:
            console.print(f"demo: logs and data kept in {stack.workdir}")
    return code


def _settings_overrides(redis_url: str, sandbox_url: str) -> dict[str, Any]:
    """The demo always runs against its own sandbox, whatever MCE_* the shell has."""
    return {
        "profile": "sandbox",
        "redis_url": redis_url,
        "mce_base_url": sandbox_url,
        "mce_client_id": SANDBOX_CLIENT_ID,
        "mce_client_secret": SANDBOX_CLIENT_SECRET,
        "mce_webhook_secret": SANDBOX_WEBHOOK_SECRET,
        "poll_schedule": POLL_SCHEDULE,
        "tick_interval": float(TICK_INTERVAL),
    }


def _child_env(redis_url: str, sandbox_url: str, *, webhooks: bool) -> dict[str, str]:
    # With the sandbox's webhooks on, polling is the safety net (issue: calls per refund -> 2): the
    # first Get waits a short grace window, in which the sandbox's webhook normally arrives.
    expected = {"REFUNDS_WEBHOOKS_EXPECTED": "true", "REFUNDS_WEBHOOK_GRACE_SECONDS": "3"}
    return {
        **(expected if webhooks else {}),
        "REDIS_URL": redis_url,
        "MCE_BASE_URL": sandbox_url,
        "REFUNDS_PROFILE": "sandbox",
        "MCE_CLIENT_ID": SANDBOX_CLIENT_ID,
        "MCE_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "MCE_WEBHOOK_SECRET": SANDBOX_WEBHOOK_SECRET,
        "REFUNDS_POLL_SCHEDULE": POLL_SCHEDULE,
        "REFUNDS_TICK_INTERVAL": TICK_INTERVAL,
        "REFUNDS_LOG_JSON": "true",
    }


def _start(
    opts: DemoOptions, stack: LocalStack, external: str | None, console: Console
) -> tuple[str, str, str]:
    """Redis (unless external), the web app, the sandbox (webhooks to the web app), workers and
    beat; returns the Redis, sandbox and web URLs once everything answers."""
    if external:
        stack.use_redis(external)
        console.print(
            "demo: using REDIS_URL (refunds and Celery queues go there; other workers "
            "on it would take demo tasks too)"
        )
    else:
        stack.start_redis(appendonly=False)
        console.print(f"demo: private Redis at {stack.redis_url}")
    redis_url = stack.redis_url

    sandbox_port = _port_or_free(opts.sandbox_port)
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = _child_env(redis_url, sandbox_url, webhooks=opts.webhooks)
    web_url = stack.start_web(_port_or_free(opts.web_port), env)
    console.print(f"demo: HTTP API and webhook receiver at {web_url}")

    sandbox_config: dict[str, Any] = {
        "processing_seconds": opts.processing_seconds,
        "token_ttl_seconds": opts.token_ttl,
    }
    if opts.webhooks:
        sandbox_config.update(
            webhook_url=f"{web_url}/webhooks/mce", webhook_secret=SANDBOX_WEBHOOK_SECRET
        )
    sandbox_url = stack.start_sandbox(sandbox_port, sandbox_config)
    console.print(f"demo: sandbox at {sandbox_url} {json.dumps(sandbox_config)}")

    for i in range(opts.workers):
        stack.start_worker(f"worker{i + 1}", concurrency=opts.concurrency, env=env, wait=None)
    stack.start_beat(env=env)
    for worker in stack.workers:
        wait_for_worker(worker, timeout=90)
    console.print(f"demo: {opts.workers} worker(s) x {opts.concurrency} and beat are up")

    stack.wait_for_web(60)
    return redis_url, sandbox_url, web_url


def _run(
    opts: DemoOptions,
    stack: LocalStack,
    external: str | None,
    *,
    screen: Screen,
    started: float,
) -> int:
    console, stdout = screen.console, screen.stdout
    run_id = secrets.token_hex(3)
    prefix = f"demo-{run_id}-"
    console.print(f"demo: run {run_id}, {opts.count} refunds, working dir {stack.workdir}")

    redis_url, sandbox_url, web_url = _start(opts, stack, external, console)

    settings = load_settings(**_settings_overrides(redis_url, sandbox_url))
    stack.wait_for_web(60)
    refs = [f"{prefix}{i:0{len(str(opts.count))}d}" for i in range(1, opts.count + 1)]
    _flag_payments(sandbox_url, refs)
    run_started = time.time()
    _submit(settings, refs)
    console.print(f"demo: submitted {len(refs)} intents; following them")

    ledger = Ledger.from_url(redis_url)
    deadline = time.monotonic() + opts.timeout

    def on_tick() -> None:
        stack.check_alive()
        if time.monotonic() > deadline:
            raise _Timeout

    try:
        screen.follow(ledger, refs, f"demo {run_id}", console, on_tick)
    except _Timeout:
        pending = {
            ref: state or ""
            for ref, state in zip(refs, ledger.states_of(refs), strict=True)
            if state not in FINAL_STATES
        }
        console.print(
            f"demo: [red]timed out[/] after {opts.timeout:.0f} s; {len(pending)} not final:"
        )
        for ref, state in sorted(pending.items())[:50]:
            console.print(f"  {ref}: {state or 'missing'}")
        if len(pending) > 50:
            console.print(f"  ... and {len(pending) - 50} more")
        return EXIT_FAILED

    records = ledger.get_many(refs)
    counters = requests.get(
        f"{sandbox_url}/sandbox/counters", params={"prefix": prefix}, timeout=10
    ).json()
    summary = summarize(
        opts,
        run_id,
        records,
        counters,
        wall_seconds=time.monotonic() - started,
        run_seconds=time.time() - run_started,
    )
    if opts.as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(stdout, summary)
    code = EXIT_OK if summary["allCompleted"] else EXIT_FAILED
    _wait_archived(console, stack, ledger)
    if opts.serve:
        _serve(console, stack, web_url, sandbox_url, refs[0])
    return code


def _wait_archived(console: Console, stack: LocalStack, ledger: Ledger) -> None:
    """Let the archiver catch up (it runs every second), so the demo leaves every refund, final,
    in its SQL archive (``stack.database_url``; kept with --keep-dir)."""
    queue = ArchiveQueue(ledger.redis)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: queue.lag().length == 0, 30, what="the archive")
    lag = queue.lag()
    if lag.length:
        console.print(f"demo: [yellow]archive behind[/]: {lag.length} changes still queued")
    else:
        console.print(f"demo: archive caught up ({stack.database_url})")


def _serve(console: Console, stack: LocalStack, web_url: str, sandbox_url: str, ref: str) -> None:
    """Keep everything running for the examples, until Ctrl-C; their environment in .demo/env."""
    flag_example_payments(sandbox_url)
    env_file = write_env_file(stack.redis_url, sandbox_url, web_url, stack.database_url)
    console.print(
        f"\ndemo: serving until Ctrl-C. HTTP API {web_url} (X-API-Key: sandbox-api-key), "
        f"sandbox {sandbox_url}; payments TX-1001, TX-1002 and TX-1003 are flagged for the "
        f"examples. In another shell, here: source {env_file}\n"
        f"  curl -s -H 'X-API-Key: sandbox-api-key' \"$DEMO_API/refunds/{ref}\"\n"
        "  refunds stats"
    )
    try:
        while True:
            stack.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:  # also SIGTERM (_Terminated): the normal end of serving
        console.print("demo: done serving")
    finally:
        # Its URLs die with the stack: a stale file would point the next shell at nothing.
        env_file.unlink(missing_ok=True)


class _Timeout(Exception):  # noqa: N818 - internal control flow, not an error type
    pass


def _port_or_free(preferred: int) -> int:
    """The preferred port (stable URLs for the README's examples) unless it is taken."""
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _flag_payments(sandbox_url: str, refs: list[str]) -> None:
    """What MCE's KYT would do: put each payment in pending-refund, so Create can succeed."""
    payments = [
        {
            "originalTransactionType": 1,
            "originalTransactionId": ref,
            "amount": f"{10 + i % 90}.50",
            "currency": "USDT",
            "outcome": "completed",
        }
        for i, ref in enumerate(refs)
    ]
    for start in range(0, len(payments), 1000):
        response = requests.post(
            f"{sandbox_url}/sandbox/payments",
            json={"payments": payments[start : start + 1000]},
            timeout=30,
        )
        response.raise_for_status()


def _submit(settings: Settings, refs: list[str]) -> None:
    from refunds.producer import Producer  # noqa: PLC0415 - Celery loads only when needed

    producer = Producer(settings)
    for ref in refs:
        producer.submit(
            RefundIntent.parse(
                {
                    "originalTransactionType": 1,
                    "originalTransactionId": ref,
                    "clientReference": ref,
                }
            )
        )


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: a value that actually occurred."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def time_to_final(record: RefundRecord) -> float | None:
    """Seconds from submission to the history entry that made the record final."""
    for entry in reversed(record.history):
        if State(entry.to_state) in FINAL_STATES:
            return max(0.0, entry.at - record.created_at)
    return None


def summarize(
    opts: DemoOptions,
    run_id: str,
    records: list[RefundRecord],
    counters: dict[str, Any],
    *,
    wall_seconds: float,
    run_seconds: float,
) -> dict[str, Any]:
    """The demo's numbers, as the JSON summary (the human one is printed from it)."""
    n = opts.count
    states: dict[str, int] = {}
    for r in records:
        states[str(r.state)] = states.get(str(r.state), 0) + 1
    calls = {op: int(counters.get("calls", {}).get(op, 0)) for op in ("create", "confirm", "get")}
    calls["total"] = sum(calls.values())
    effects = counters.get("effects", {})
    creates = [int(effects.get(r.client_reference, {}).get("create", 0)) for r in records]
    confirms = [int(effects.get(r.client_reference, {}).get("confirm", 0)) for r in records]
    times = sorted(t for t in (time_to_final(r) for r in records) if t is not None)

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "runId": run_id,
        "count": n,
        "workers": opts.workers,
        "concurrency": opts.concurrency,
        "states": states,
        "completed": states.get(State.COMPLETED.value, 0),
        "allCompleted": len(records) == n and states.get(State.COMPLETED.value, 0) == n,
        "providerCalls": calls,
        "providerCallsPerRefund": {op: round(v / n, 3) for op, v in calls.items()},
        "tokenCalls": int(counters.get("calls", {}).get("token", 0)),
        "tokensIssued": int(counters.get("tokens_issued", 0)),
        "createsPerReferenceAllOne": len(creates) == n and all(c == 1 for c in creates),
        "confirmsPerReferenceAllOne": len(confirms) == n and all(c == 1 for c in confirms),
        "timeToFinalSeconds": {
            "p50": rounded(_percentile(times, 0.50)),
            "p95": rounded(_percentile(times, 0.95)),
            "max": rounded(times[-1] if times else None),
        },
        "finishedByWebhook": sum(
            1 for r in records if r.is_final and r.history and r.history[-1].actor == "mce-webhook"
        ),
        "runSeconds": round(run_seconds, 3),
        "wallSeconds": round(wall_seconds, 3),
    }


def print_summary(console: Console, s: dict[str, Any]) -> None:
    per = s["providerCallsPerRefund"]
    ttf = s["timeToFinalSeconds"]

    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    def yes(v: bool) -> str:
        return "[green]yes[/]" if v else "[red]no[/]"

    states = "  ".join(f"{k} {v}" for k, v in sorted(s["states"].items()))
    rows = [
        ("final states", states or "-"),
        (
            "provider calls/refund",
            f"create {per['create']:.2f}  confirm {per['confirm']:.2f}  get {per['get']:.2f}  "
            f"total {per['total']:.2f}",
        ),
        ("token calls", f"{s['tokenCalls']} (for {s['count']} refunds)"),
        ("final by webhook", f"{s['finishedByWebhook']} of {s['count']} (the rest by polling)"),
        ("one create per ref", yes(s["createsPerReferenceAllOne"])),
        ("one confirm per ref", yes(s["confirmsPerReferenceAllOne"])),
        (
            "time to final",
            f"p50 {secs(ttf['p50'])}  p95 {secs(ttf['p95'])}  max {secs(ttf['max'])}",
        ),
        ("wall time", f"{s['wallSeconds']:.1f} s (submit to all final {s['runSeconds']:.1f} s)"),
    ]
    console.print(
        f"\n[bold]demo {s['runId']}[/]: {s['count']} refunds, {s['workers']} worker(s) "
        f"x {s['concurrency']}"
    )
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        console.print(f"  {key:<{width}}  {value}", soft_wrap=True)
    style = "green" if s["allCompleted"] else "red"
    console.print(f"[{style}]{s['completed']} of {s['count']} completed[/]")
