"""Flower's door: started exactly as the Procfile and as docker-compose start it, it lets only the
whole ``FLOWER_BASIC_AUTH`` in, and refuses to start without one or with the placeholder.

Real Flower processes against a private redis-server. The Procfile line runs under ``sh -c`` with
the variables in the environment (as honcho runs it); the compose service's command runs as its
argument list, with only its port and address moved to a free loopback port.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from devstack.localstack import Child, free_port, start_redis, wait_until
from refunds.cli.flower import flower_credential
from tests.conftest import TEST_ENV

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLACEHOLDER = "operator:change-this-password"  # .env.example's


def procfile_command(port: int) -> list[str]:
    line = next(
        raw.split(":", 1)[1].strip()
        for raw in (REPO / "Procfile").read_text().splitlines()
        if raw.startswith("flower:")
    )
    assert "FLOWER_BASIC_AUTH" not in line, "the secret must not be on the command line"
    return ["sh", "-c", line.replace("${FLOWER_PORT:-5555}", str(port))]


def compose_command(port: int) -> list[str]:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["flower"]
    assert service["ports"] == ["127.0.0.1:5555:5555"], "Flower published beyond loopback"
    command = service["command"]
    assert isinstance(command, list), "compose runs the launcher as an argument list, no shell"
    moved = {"--address=0.0.0.0": "--address=127.0.0.1", "--port=5555": f"--port={port}"}
    assert set(moved) <= set(command)
    return [moved.get(arg, arg) for arg in command]


STARTERS = {"procfile": procfile_command, "compose": compose_command}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("flower-door-redis"))
    yield url
    child.stop()


def flower_env(broker: str, basic_auth: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "REFUNDS_"))}
    env.update(TEST_ENV)
    env.update({"REDIS_URL": broker, "PATH": f"{BIN}:{env.get('PATH', '')}"})
    if basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = basic_auth
    return env


def header(credential: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credential.encode()).decode()}


@pytest.mark.parametrize("starter", sorted(STARTERS))
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "FLOWER_BASIC_AUTH is not set"),
        ("", "FLOWER_BASIC_AUTH is not set"),
        (PLACEHOLDER, "placeholder password"),
        ("ops:short", "shorter than 12 characters"),
        ("no-colon-in-this-value", "must be user:password"),
    ],
)
def test_flower_does_not_start_without_a_real_login(
    broker: str, starter: str, value: str | None, reason: str
) -> None:
    port = free_port()
    proc = subprocess.run(
        STARTERS[starter](port),
        env=flower_env(broker, value),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert reason in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("starter", sorted(STARTERS))
@pytest.mark.parametrize(
    ("password", "pieces"),
    [
        ("Sec,ret-Pass-9", ["ops:Sec", "ret-Pass-9"]),
        ("Sec ret:Pass 9", ["ops:Sec", "ret:Pass", "9", "ops:Sec ret"]),
    ],
)
def test_only_the_whole_login_gets_in(
    broker: str, starter: str, password: str, pieces: list[str], tmp_path: Path
) -> None:
    port = free_port()
    child = Child(
        "flower",
        STARTERS[starter](port),
        tmp_path / "flower.log",
        flower_env(broker, f"ops:{password}"),
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(url + "/healthcheck", timeout=1).ok, 60, what="flower", child=child
        )
        real = requests.get(url + "/api/tasks", auth=("ops", password), timeout=10)
        assert real.status_code == 200, child.tail(20)
        refused = [
            {},
            {"Authorization": "Basic ="},
            {"Authorization": "Basic "},
            {"Authorization": "Basic"},
            {"Authorization": "Bearer x"},
            {"Authorization": "Basic !!not-base64!!"},
            header(""),
            header(":"),
            header(PLACEHOLDER),
            header("ops:" + password + " "),
            header("OPS:" + password),
            *(header(piece) for piece in pieces),
        ]
        for headers in refused:
            for path in ("/api/tasks", "/api/workers", "/", "/tasks", "/broker"):
                got = requests.get(url + path, headers=headers, timeout=10)
                assert got.status_code == 401, (headers, path, got.status_code)
        shutdown = requests.post(
            url + "/api/worker/shutdown/celery@nowhere", headers=header(pieces[0]), timeout=10
        )
        assert shutdown.status_code == 401
        log = child.log_path.read_text(errors="replace")
        assert password not in log
        assert re.search(r"Visit me at http://127\.0\.0\.1:\d+", log), log[-2000:]
    finally:
        child.stop()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ops:sec\nret-password", "U+000A"),
        ("ops:secret-pass\u200bword", "U+200B"),
        (":no-user-at-all-here", "must be user:password"),
        ("operator:changeme", "placeholder"),
        ("operator:CHANGE-THIS-PASSWORD", "placeholder"),
        ("ops:change-this-grafana-password", "placeholder"),  # .env.example's other placeholder
        ("ops:", "empty password"),
        ("ops:            ", "empty password"),
    ],
)
def test_flower_credential_names_the_problem_without_the_password(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        flower_credential(value)
    password = value.partition(":")[2]
    assert not password.strip() or password not in str(caught.value)


def test_flower_credential_keeps_commas_colons_and_spaces() -> None:
    assert flower_credential("ops:a, b:c d-long-enough") == "ops:a, b:c d-long-enough"
