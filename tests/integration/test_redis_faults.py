"""Redis trouble is loud and bounded, seen from outside: a real ``refunds web`` (uvicorn), the
``refunds`` CLI and the health probe as subprocesses, each on a private redis-server of its own.

- Redis restarted empty (its data lost): health red, intake and MCE's webhook refused with 503
  JSON, the CLI exits 75, one ERROR line, until ``refunds redis ack-reset`` records who and why.
- Redis out of memory (``maxmemory`` under ``noeviction``): 503 JSON with ``Retry-After``, one CLI
  line with exit 75, health red; green again once memory is back.
- Redis frozen (SIGSTOP): ``/healthz`` and ``POST /refunds`` answer 503 within the socket bound,
  under the locked redis-py and under the oldest (and the 7.x) release ``redis>=5`` allows: the web
  app runs with that release first on its ``PYTHONPATH`` (installed with pip into a throwaway
  directory, the wheel's hash pinned below).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from config.redis_connection import SOCKET_TIMEOUT
from devstack.localstack import Child, free_port, start_redis, start_web, wait_until
from devstack.processes import start_beat, start_worker, wait_for_worker
from refunds.store.epoch import CHECK_INTERVAL
from refunds.store.keys import EPOCH, EPOCH_LOST, event_key, record_key
from sandbox.webhooks import SIGNATURE_HEADER, signature_header
from worker.beat import EPOCH_EVERY

KEY = "test-api-key-redis-faults"
SECRET = "whsec-test-redis-faults"
JSON = {"Content-Type": "application/json"}
REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "refunds.cli"]
HEALTH = [sys.executable, "-m", "refunds.ops.health"]
#: A frozen Redis must be answered within the socket timeout plus this (the web's own work).
BOUND_SLACK = 2.0
CONCURRENT = 4  # requests of each kind sent at once to the frozen Redis

#: redis-py releases the frozen-Redis test runs the web app under, besides the locked one: the
#: lowest ``redis>=5`` allows, and the 7.x release whose defaults held a request for 20 s.
OTHER_REDIS_PY = {
    "5.0.0": "sha256:06570d0b2d84d46c21defc550afbaada381af82f5b83e5b3777600e05d8e2ed0",
    "7.4.1": "sha256:1fa4647af1c5e93a2c685aa248ee44cce092691146d41390518dabe9a99839b0",
}


@dataclass
class Web:
    url: str
    redis_url: str
    redis_child: Child
    web: Child
    workdir: Path

    def env(self) -> dict[str, str]:
        return dict(self.web.env)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=5)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        return requests.post(
            self.url + path, data=body, headers={"X-API-Key": KEY, **(headers or {})}, timeout=30
        )

    def submit(self, ref: str) -> Any:
        return self.post("/refunds", json.dumps(intent(ref)).encode(), JSON)

    def healthz(self) -> Any:
        return requests.get(self.url + "/healthz", timeout=30)

    def webhook(self, ref: str, nid: str) -> Any:
        event = {
            "eventType": "crypto.refund.updated",
            "notificationId": nid,
            "data": {"cryptoRefundId": f"CR-{ref}", "clientReference": ref, "status": 3},
        }
        body = json.dumps(event).encode()
        signed = {SIGNATURE_HEADER: signature_header(SECRET, body), **JSON}
        return requests.post(self.url + "/webhooks/mce", data=body, headers=signed, timeout=30)

    def restart_redis_empty(self) -> None:
        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.redis_child.stop()
        self.redis_child, url = start_redis(self.workdir / "redis", port=port, appendonly=False)
        assert url == self.redis_url

    def stop(self) -> None:
        self.redis_child.signal(signal.SIGCONT)
        self.web.stop()
        self.redis_child.stop()


def intent(ref: str) -> dict[str, Any]:
    return {
        "originalTransactionType": 1,
        "originalTransactionId": f"tx-{ref}",
        "clientReference": ref,
    }


def start(workdir: Path, pythonpath: str | None = None) -> Web:
    redis_child, redis_url = start_redis(workdir / "redis", appendonly=False)
    env = {
        "REFUNDS_PROFILE": "sandbox",
        "REDIS_URL": redis_url,
        "REFUNDS_API_KEY": KEY,
        "MCE_WEBHOOK_SECRET": SECRET,
        "REFUNDS_LOG_JSON": "true",
        "REFUNDS_DATABASE_URL": os.environ["REFUNDS_DATABASE_URL"],  # the session's, migrated
    }
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    port = free_port()
    web = start_web(workdir / "logs", env, port=port)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url + "/healthz", timeout=2).ok, 30, "web", web)
    return Web(url, redis_url, redis_child, web, workdir)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    started = start(tmp_path)
    yield started
    started.stop()


def run(env: dict[str, str], command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "REFUNDS_DATABASE_URL")
    clean = {k: os.environ[k] for k in keep if k in os.environ}
    return subprocess.run(
        [*command, *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_503_json(answer: Any, fragment: str) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    assert answer.headers["Retry-After"] == "5"
    assert fragment in answer.json()["detail"], answer.json()


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]


def error_lines(child: Child, fragment: str) -> list[str]:
    found = []
    for line in child.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if str(entry.get("level")).upper() == "ERROR" and fragment in str(entry.get("msg")):
            found.append(line)
    return found


# --- Redis restarted empty ------------------------------------------------------------------------


def test_a_redis_restarted_empty_is_detected_named_and_refused_until_acknowledged(
    web: Web, prefix: str
) -> None:
    assert web.submit(prefix + "before").status_code == 201
    assert web.healthz().status_code == 200
    assert web.client().get(EPOCH) is not None  # written at first start

    web.restart_redis_empty()  # the refund submitted above is gone with the data

    wait_until(
        lambda: "lost the ledger" in web.healthz().text, 15, "health names the loss", web.web
    )
    assert_503_json(web.healthz(), "lost the ledger")
    refused = web.submit(prefix + "after")
    assert_503_json(refused, "refunds redis ack-reset")
    # A webhook for the refund the lost ledger held is not parked as early: 503, MCE redelivers.
    hook = web.webhook(prefix + "before", f"n-{prefix}")
    assert_503_json(hook, "lost the ledger")
    client = web.client()
    assert client.keys(event_key("*")) == []  # stored or parked: none
    assert client.exists(record_key(prefix + "after")) == 0
    assert json.loads(client.get(EPOCH_LOST) or "{}")["by"] == "web"

    # Fresh processes see the recorded loss too: the health probe is red, CLI intake exits 75.
    probe = run(web.env(), HEALTH)
    assert probe.returncode == 1 and "lost the ledger" in probe.stderr, probe.stderr
    submitted = run(
        web.env(), CLI, "submit", "--type", "1", "--txn-id", "tx-cli", "--ref", prefix + "cli"
    )
    assert_one_line(submitted, 75, "lost the ledger")
    for _ in range(5):
        web.healthz()
    time.sleep(0.5)
    assert len(error_lines(web.web, "lost the ledger")) == 1  # once, not once per request

    nobody = run(web.env(), CLI, "redis", "ack-reset", "--by", "ann", "--reason", "")
    assert nobody.returncode == 2, nobody.stderr
    acked = run(
        web.env(), CLI, "redis", "ack-reset", "--by", "ann", "--reason", "restored from MCE"
    )
    assert acked.returncode == 0, acked.stderr
    epoch = json.loads(client.get(EPOCH) or "{}")
    assert (epoch["origin"], epoch["by"], epoch["reason"]) == ("ack", "ann", "restored from MCE")
    assert client.exists(EPOCH_LOST) == 0
    wait_until(lambda: web.healthz().status_code == 200, 10, "health green after the ack", web.web)
    assert web.submit(prefix + "after").status_code == 201
    again = run(web.env(), CLI, "redis", "ack-reset", "--by", "ann", "--reason", "twice")
    assert_one_line(again, 1, "no ledger reset is recorded")


# --- Redis out of memory --------------------------------------------------------------------------


def test_redis_out_of_memory_is_503_json_one_cli_line_and_red_health(web: Web, prefix: str) -> None:
    client = web.client()
    client.config_set("maxmemory", "1")  # every write refused: OOM under noeviction
    try:
        answer = web.submit(prefix + "oom")
        assert_503_json(answer, "OutOfMemoryError")
        assert_503_json(web.webhook(prefix + "oom", f"n-{prefix}"), "OutOfMemoryError")
        assert_503_json(web.healthz(), "OutOfMemoryError")
        submitted = run(
            web.env(), CLI, "submit", "--type", "1", "--txn-id", "tx-oom", "--ref", prefix + "c"
        )
        assert_one_line(submitted, 75, "out of memory")
        probe = run(web.env(), HEALTH)
        assert probe.returncode == 1 and "maxmemory" in probe.stderr, probe.stderr
    finally:
        client.config_set("maxmemory", "0")
    assert web.healthz().status_code == 200
    assert web.submit(prefix + "oom").status_code == 201


def test_unreachable_redis_is_one_cli_line_and_exit_75(web: Web) -> None:
    env = {**web.env(), "REDIS_URL": "redis://127.0.0.1:1/0"}
    assert_one_line(run(env, CLI, "status", "x"), 75, "cannot reach Redis")


# --- Redis frozen ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_py_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The other redis-py releases, each installed (hash-checked, no dependencies) into a
    directory of its own that goes first on the web process's PYTHONPATH."""
    root = tmp_path_factory.mktemp("redis-py")
    dirs: dict[str, str] = {}
    for version, digest in OTHER_REDIS_PY.items():
        pins = root / f"redis-{version}.txt"
        pins.write_text(f"redis=={version} --hash={digest}\n")
        target = root / version
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--require-hashes",
                "--only-binary=:all:",
                "--target",
                str(target),
                "-r",
                str(pins),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        dirs[version] = str(target)
    return dirs


def timed(call: Any) -> tuple[float, Any]:
    began = time.monotonic()
    answer = call()
    return time.monotonic() - began, answer


@pytest.mark.parametrize("version", ["locked", *OTHER_REDIS_PY])
def test_a_frozen_redis_gets_bounded_503_answers_under_every_redis_py(
    version: str, redis_py_dirs: dict[str, str], tmp_path: Path, prefix: str
) -> None:
    started = start(tmp_path, None if version == "locked" else redis_py_dirs[version])
    try:
        shown = run(
            started.env(), [sys.executable, "-c", "import redis; print(redis.__version__)"]
        ).stdout.strip()
        if version != "locked":
            assert shown == version
        assert started.submit(prefix + "warm").status_code == 201
        time.sleep(CHECK_INTERVAL + 0.2)  # each request now reads the epoch first
        started.redis_child.signal(signal.SIGSTOP)  # frozen: the socket accepts, nothing answers
        calls = [started.healthz] * CONCURRENT + [
            (lambda n=n: started.submit(f"{prefix}frozen-{n}")) for n in range(CONCURRENT)
        ]
        with ThreadPoolExecutor(len(calls)) as pool:  # at once: none may queue behind another
            answers = list(pool.map(timed, calls))
        cli_s, cli = timed(lambda: run(started.env(), CLI, "status", prefix + "warm"))
        started.redis_child.signal(signal.SIGCONT)
        health = answers[:CONCURRENT]
        submitted = answers[CONCURRENT:]
        print(  # the figures the report quotes
            f"\nredis-py {shown}: {CONCURRENT} x /healthz "
            f"{sorted({a.status_code for _, a in health})} in at most "
            f"{max(t for t, _ in health):.2f}s, {CONCURRENT} x POST /refunds "
            f"{sorted({a.status_code for _, a in submitted})} in at most "
            f"{max(t for t, _ in submitted):.2f}s, CLI exit {cli.returncode} in {cli_s:.2f}s"
        )
        bound = SOCKET_TIMEOUT + BOUND_SLACK
        for seconds, answer in answers:
            assert answer.status_code == 503 and seconds < bound, (seconds, answer.text)
            assert answer.headers["Retry-After"] == "5"
        assert cli.returncode == 75 and cli_s < bound + 3.0, (cli_s, cli.stderr)  # + start-up
        wait_until(lambda: started.healthz().status_code == 200, 20, "thawed", started.web)
    finally:
        started.stop()


def test_a_worker_and_beat_that_knew_the_ledger_log_its_loss_once(tmp_path: Path) -> None:
    """Workers (at start and with each event heartbeat) and beat (every few ticks) read the epoch
    too: after an empty restart each logs one ERROR, and the loss is recorded for all."""
    redis_child, url = start_redis(tmp_path / "redis", appendonly=False)
    env = {"REFUNDS_PROFILE": "sandbox", "REDIS_URL": url, "REFUNDS_LOG_JSON": "true"}
    env["REFUNDS_TICK_INTERVAL"] = "0.25"
    env["REFUNDS_DATABASE_URL"] = os.environ["REFUNDS_DATABASE_URL"]
    worker = start_worker(tmp_path, env, name="epoch-worker", concurrency=1)
    beat = start_beat(tmp_path, env, name="epoch-beat")
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    try:
        wait_for_worker(worker)
        wait_until(lambda: client.get(EPOCH) is not None, 30, "an epoch", worker)
        time.sleep(EPOCH_EVERY + 1)  # beat has read it too
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        redis_child.stop()
        redis_child, _ = start_redis(tmp_path / "redis", port=port, appendonly=False)
        for child in (worker, beat):
            wait_until(
                lambda c=child: error_lines(c, "lost the ledger"),  # type: ignore[misc]
                30,
                f"{child.name} logs the loss",
                child,
            )
        time.sleep(EPOCH_EVERY + 1)  # more checks: no more lines
        assert len(error_lines(worker, "lost the ledger")) == 1
        assert len(error_lines(beat, "lost the ledger")) == 1
        assert client.get(EPOCH_LOST) is not None
    finally:
        beat.stop()
        worker.stop()
        redis_child.stop()
