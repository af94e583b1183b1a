"""Long-running commands: ``web`` (the HTTP API), ``sandbox`` (the MCE simulator) and ``demo``
(the whole pipeline on this machine). Their heavy imports (uvicorn, the simulator, devstack) load
only when the command runs, so ``refunds status`` stays quick and the domain never imports them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import click
from rich.console import Console

from refunds.cli import common
from refunds.cli.common import EXIT_USAGE, fail
from refunds.cli.progress import RefundView, follow, make_console
from refunds.store.ledger import Ledger


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="uvicorn worker processes.",
)
@click.option(
    "--read-deadline",
    type=click.FloatRange(0, 60, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a client has to send a whole request (head and body), from connecting or "
    "from the request's first byte; then 408 and the connection closes.",
)
@click.option(
    "--keep-alive",
    type=click.IntRange(1, 300),
    default=5,
    show_default=True,
    help="Seconds an idle kept-alive connection stays open between requests.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=None,
    help="Connections per worker process; past it the longest-idle one is closed, or the new "
    "one gets 503 if all are busy  [default: the open-files limit minus 512]",
)
def web(
    *,
    host: str,
    port: int,
    workers: int,
    read_deadline: float,
    keep_alive: int,
    max_connections: int | None,
) -> None:
    """Serve the HTTP API and MCE's webhook endpoint (uvicorn; OpenAPI at /openapi.json).

    Slow and idle clients are bounded: a read deadline per request, a keep-alive timeout and a
    connection cap below the open-files limit (whose soft value is raised to the hard one).
    """
    from refunds.archive.db import require_current_schema  # noqa: PLC0415
    from refunds.kyt.intake import rules_from_settings  # noqa: PLC0415
    from refunds.ops.logs import configure  # noqa: PLC0415
    from refunds.web.deps import api_key_of, operator_keys_of  # noqa: PLC0415
    from refunds.web.server import ServerLimits, serve  # noqa: PLC0415

    settings = common.settings()
    # Refuse to start without a real API key (or with bad operator keys), before binding a port.
    operator_keys_of(settings, api_key_of(settings))
    require_current_schema(settings.database_url)  # reads answer from the archive too
    rules_from_settings(settings)  # a bad KYT rules file: every problem in one message, exit 2
    configure(settings.log_level, settings.log_json)
    serve(
        "refunds.web.app:app_from_env",
        host=host,
        port=port,
        workers=workers,
        limits=ServerLimits(
            read_deadline=read_deadline, keep_alive=keep_alive, max_connections=max_connections
        ),
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8099, show_default=True)
@click.option(
    "--config",
    "config_json",
    help="Simulator switches as JSON, e.g. "
    '\'{"processing_seconds": 2, "error_rates": {"503": 0.1}}\'.',
)
def sandbox(host: str, port: int, config_json: str | None) -> None:
    """Run the MCE simulator in the foreground (Ctrl-C stops it).

    This is the fake provider, not a pipeline process, so it needs no pipeline settings; point
    the pipeline at it with REFUNDS_PROFILE=sandbox and MCE_BASE_URL=http://HOST:PORT.
    """
    # Imported here: refunds code never depends on the simulator at import time.
    from sandbox.config import SandboxConfig  # noqa: PLC0415
    from sandbox.server import serve  # noqa: PLC0415

    try:
        config = SandboxConfig().merge(json.loads(config_json or "{}"))
    except ValueError as exc:  # also json.JSONDecodeError
        fail(f"bad --config: {exc}", EXIT_USAGE)
    try:
        serve(host, port, config)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE)


@click.command()
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many refunds to push through.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Pool size of each worker.",
)
@click.option(
    "--processing-seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="How long the sandbox keeps a refund processing on chain.",
)
@click.option(
    "--token-ttl",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Lifetime of the sandbox's bearer tokens, in seconds.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=None,
    help="Seconds to wait for every refund to be final  [default: 120 + count/2]",
)
@click.option("--keep-dir", is_flag=True, help="Keep the working directory (logs, Redis data).")
@click.option(
    "--webhooks/--no-webhooks",
    default=True,
    show_default=True,
    help="The sandbox sends status webhooks to the demo's web app.",
)
@click.option(
    "--serve",
    is_flag=True,
    help="After the summary, keep everything running (for curl) until Ctrl-C.",
)
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port of the HTTP API (a free one if taken).",
)
@click.option(
    "--sandbox-port",
    type=click.IntRange(1, 65535),
    default=8099,
    show_default=True,
    help="Port of the sandbox (a free one if taken).",
)
@click.option("--json", "as_json", is_flag=True, help="The summary as a JSON object on stdout.")
def demo(
    *,
    count: int,
    workers: int,
    concurrency: int,
    processing_seconds: float,
    token_ttl: float,
    timeout: float | None,
    keep_dir: bool,
    as_json: bool,
    webhooks: bool,
    serve: bool,
    web_port: int,
    sandbox_port: int,
) -> None:
    """Run the whole pipeline here: Redis, the sandbox, workers and beat, then N refunds.

    Uses REDIS_URL when set (it must be reachable), else starts a private Redis. Exits 0 only if
    every refund ends `completed`.
    """
    from devstack.demo import DemoOptions, Screen, run_demo  # noqa: PLC0415

    code = run_demo(
        DemoOptions(
            count=count,
            workers=workers,
            concurrency=concurrency,
            processing_seconds=processing_seconds,
            token_ttl=token_ttl,
            keep_dir=keep_dir,
            webhooks=webhooks,
            serve=serve,
            web_port=web_port,
            sandbox_port=sandbox_port,
            as_json=as_json,
            timeout_seconds=timeout,
        ),
        Screen(make_console(stderr=True), make_console(), _follow_refunds),
    )
    raise click.exceptions.Exit(code)


def _follow_refunds(
    ledger: Ledger, refs: list[str], title: str, console: Console, on_tick: Callable[[], None]
) -> None:
    """The demo's live view: ``refunds watch``'s, over the demo's references."""
    follow(
        RefundView(ledger, refs=refs),
        title,
        interval=0.25,
        console=console,
        on_tick=lambda _snapshot: on_tick(),
    )
