"""The topology starts exactly as docs/topology.md says, from a venv nobody activated.

A newcomer's clone: the Procfile, the venv at ``.venv``, a ``.env`` made from ``.env.example`` as
the page says (a private Redis, a real Flower password, free ports through the Procfile's own
variables), and the page's own honcho command line run by ``bash`` with no venv on PATH. One refund
goes through it, submitted with the CLI, to ``completed``; Flower answers behind its basic auth;
then honcho stops every role.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.processes import Child, free_port, start_redis
from devstack.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


def documented_commands() -> tuple[str, str]:
    """The honcho lines of docs/topology.md's shell blocks (the page is what a reader follows):
    the archive's migration (``honcho run ... db upgrade``), then ``honcho start``."""
    page = (REPO / "docs" / "topology.md").read_text()
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", page, re.DOTALL)
        for line in block.splitlines()
        if "honcho " in line
    ]
    assert len(lines) == 2 and "db upgrade" in lines[0] and "honcho start" in lines[1], lines
    return lines[0], lines[1]


def bare_environment() -> dict[str, str]:
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin
    )
    return env


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    child: Child
    child, url = start_redis(tmp_path / "redis", appendonly=False)
    yield url
    child.stop()


def test_venv_is_not_on_the_bare_path() -> None:
    # The point of the topology test: honcho's roles find their commands only as the page says.
    assert shutil.which("celery", path=bare_environment()["PATH"]) != str(VENV / "bin" / "celery")


@pytest.mark.timeout(300)
def test_procfile_started_as_documented_completes_a_refund(
    private_redis: str, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "Procfile", clone / "Procfile")
    (clone / ".venv").symlink_to(VENV)
    ports = {name: free_port() for name in ("WEB_PORT", "SANDBOX_PORT", "FLOWER_PORT")}
    password = secrets.token_urlsafe(24)
    env_lines = []
    edits = {"REDIS_URL": private_redis, "FLOWER_BASIC_AUTH": f"ops:{password}"}
    for line in (REPO / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        env_lines.append(f"{name}={edits[name]}" if name in edits else line)
    sandbox = f"http://127.0.0.1:{ports['SANDBOX_PORT']}"
    env_lines += [f"{k}={v}" for k, v in ports.items()]
    env_lines += [f"MCE_BASE_URL={sandbox}", "WORKER_CONCURRENCY=2"]
    (clone / ".env").write_text("\n".join(env_lines) + "\n")

    upgrade, start = documented_commands()
    migrated = subprocess.run(
        ["bash", "-c", upgrade],
        cwd=clone,
        env=bare_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    log = (tmp_path / "honcho.log").open("wb")
    honcho = subprocess.Popen(
        ["bash", "-c", start],
        cwd=clone,
        env=bare_environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cli_env = {
        **bare_environment(),
        "REFUNDS_PROFILE": "sandbox",
        "REDIS_URL": private_redis,
        "MCE_BASE_URL": sandbox,
    }
    refunds = str(clone / ".venv" / "bin" / "refunds")
    try:

        def up(url: str, **kwargs: object) -> bool:
            if honcho.poll() is not None:
                raise AssertionError(f"honcho exited {honcho.returncode}: {_read(tmp_path)}")
            try:
                return requests.get(url, timeout=1, **kwargs).ok  # type: ignore[arg-type]
            except requests.ConnectionError:
                return False

        wait_until(lambda: up(f"{sandbox}/sandbox/healthz"), 90, what="sandbox role")
        wait_until(lambda: up(f"http://127.0.0.1:{ports['WEB_PORT']}/healthz"), 90, what="web")
        flower = f"http://127.0.0.1:{ports['FLOWER_PORT']}"
        wait_until(lambda: up(f"{flower}/api/workers", auth=("ops", password)), 90, what="flower")
        assert requests.get(f"{flower}/api/workers", timeout=5).status_code == 401

        requests.post(
            f"{sandbox}/sandbox/payments",
            json={
                "payments": [
                    {
                        "originalTransactionType": 1,
                        "originalTransactionId": "TX-5001",
                        "amount": "25.00",
                        "currency": "USDT",
                    }
                ]
            },
            timeout=5,
        ).raise_for_status()
        submitted = subprocess.run(
            [refunds, "submit", "--type", "1", "--txn-id", "TX-5001", "--ref", "order-5001-refund"],
            env=cli_env,
            cwd=clone,  # the roles' directory: the same default archive file
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert submitted.returncode == 0, submitted.stderr

        def state() -> str:
            shown = subprocess.run(
                [refunds, "status", "order-5001-refund", "--json"],
                env=cli_env,
                cwd=clone,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return str(json.loads(shown.stdout)["state"])

        wait_until(lambda: state() == "completed", 90, what="the refund completed")
    finally:
        honcho.send_signal(signal.SIGINT)  # what Ctrl-C in honcho's terminal sends
        try:
            honcho.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait(timeout=10)
            raise AssertionError(f"honcho did not stop on SIGINT: {_read(tmp_path)}") from None
        finally:
            log.close()
    output = (tmp_path / "honcho.log").read_text(errors="replace")
    assert "not found" not in output, output
    for name in ("web", "worker", "beat", "flower", "sandbox"):
        assert re.search(rf"\b{name}\.1\s+\| ", output), f"no {name} role output:\n{output}"
    deadline = time.monotonic() + 15
    for port in ports.values():
        while _listening(port):
            assert time.monotonic() < deadline, f"port {port} still answers after honcho stopped"
            time.sleep(0.2)


def _listening(port: int) -> bool:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _read(tmp_path: Path) -> str:
    return (tmp_path / "honcho.log").read_text(errors="replace")[-6000:]
