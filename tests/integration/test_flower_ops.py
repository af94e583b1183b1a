"""Flower for operators: refund steps, not ticks; bounded memory; the app's broker options.

A private redis-server, a real worker (task events on), a real beat (tick 0.25 s) and a real
Flower started with the Procfile's own ``flower`` command line. After a few seconds of ticks and a
few refunds, Flower's ``/api/tasks`` holds zero ``refunds.tick`` entries and holds every refund
step, named, with the reference as its argument.

A second test checks what ``celery -A worker.app flower`` connects with: Flower opens its broker
connection from the app (``capp.connection()``), and kombu's Redis transport restores unacked
messages older than *that connection's* ``visibility_timeout`` when its poller starts
(``QoS.restore_visible`` from ``on_poll_init``, for any channel, event consumers included). So
Flower must carry the app's transport options, or it could put back messages other workers are
still running.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from config.celery import celery_config
from config.settings import load_settings
from devstack.localstack import (
    Child,
    free_port,
    start_beat,
    start_redis,
    start_worker,
    wait_for_worker,
    wait_until,
)
from refunds.producer import Producer
from refunds.store.ledger import Ledger
from tests.conftest import TEST_ENV, SandboxAdmin, wait_final

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ops", "flower-test-password"


def procfile_flower_args(port: int) -> list[str]:
    """The Procfile's flower command, with its variables filled in as a shell would."""
    line = next(
        raw.split(":", 1)[1].strip()
        for raw in (REPO / "Procfile").read_text().splitlines()
        if raw.startswith("flower:")
    )
    values = {"FLOWER_PORT": str(port), "VENV_BIN": str(Path(sys.executable).parent)}

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(2) or "")

    args = re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", fill, line).split()
    # The program is ``${VENV_BIN:-.venv/bin}/refunds``: run the same CLI with this interpreter.
    assert Path(args[0]).name == "refunds"
    assert args[1] == "flower"
    return [sys.executable, "-m", "refunds.cli", *args[1:]]


@pytest.fixture(scope="module")
def flower_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("flower-redis"))
    yield url
    child.stop()


def test_procfile_flower_is_bounded() -> None:
    args = procfile_flower_args(5555)
    assert args[args.index("--max-tasks") + 1] == "10000"
    assert args[args.index("--purge-offline-workers") + 1] == "300"
    compose = (REPO / "docker-compose.yml").read_text()
    assert "--max-tasks=10000" in compose
    assert "--purge-offline-workers=300" in compose
    assert "- flower" in compose


def test_flower_lists_refund_steps_and_no_ticks(
    flower_redis: str, env: dict[str, str], sandbox: SandboxAdmin, prefix: str, tmp_path: Path
) -> None:
    run_env = {**env, "REDIS_URL": flower_redis, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    children: list[Child] = []
    try:
        worker = start_worker(tmp_path, run_env, name="flower-worker", concurrency=2)
        children.append(worker)
        wait_for_worker(worker)
        port = free_port()
        flower = Child("flower", procfile_flower_args(port), tmp_path / "flower.log", run_env)
        children.append(flower.start())
        url = f"http://127.0.0.1:{port}"
        auth = (USER, PASSWORD)

        def get(path: str) -> requests.Response:
            r = requests.get(url + path, auth=auth, timeout=10)
            r.raise_for_status()
            return r

        wait_until(lambda: get("/api/workers?refresh=1").json(), 60, "flower", flower)
        children.append(start_beat(tmp_path, run_env, name="flower-beat"))

        settings = load_settings(
            **{
                k.removeprefix("REFUNDS_").lower(): v
                for k, v in TEST_ENV.items()
                if k.startswith("REFUNDS_")
            },
            redis_url=flower_redis,
            mce_base_url=env["MCE_BASE_URL"],
        )
        ledger = Ledger.from_url(flower_redis)
        producer = Producer(settings, ledger=ledger)
        refs = [f"{prefix}fl{i}" for i in range(3)]
        sandbox.flag([f"{r}-tx" for r in refs], outcome="completed")
        for ref in refs:
            producer.submit(
                {
                    "originalTransactionType": 1,
                    "originalTransactionId": f"{ref}-tx",
                    "clientReference": ref,
                }
            )
        wait_final(ledger, refs, timeout=30)
        time.sleep(3.0)  # a dozen more ticks, and Flower's last events
        assert (ledger.since_last_tick() or 99) < 2, "the ticks did not run"

        deadline = time.monotonic() + 20
        while True:
            tasks = get("/api/tasks").json()
            # The reference first: "('REF',)" or "['REF']" from a nudge, "('REF', 7)" with the
            # tick's dispatch fence (an integer: ids only, nothing secret).
            done = {
                (t.get("name"), ref)
                for t in tasks.values()
                for ref in refs
                if t.get("state") == "SUCCESS" and _names_only(str(t.get("args")), ref)
            }
            wanted = {(f"refunds.{s}", r) for s in ("create", "poll") for r in refs}
            if wanted <= done:
                break
            assert time.monotonic() < deadline, (sorted(wanted - done)[:2], sorted(done)[:4])
            time.sleep(0.5)
        tasks = get("/api/tasks").json()
        names = [t.get("name") for t in tasks.values()]
        assert names.count("refunds.tick") == 0
        # Steps, and the outcome deliveries every final refund now queues (the delivering worker
        # picks the channels); never the tick nor the archiver's drain.
        shown = {"refunds.create", "refunds.confirm", "refunds.poll", "notifications.deliver"}
        assert all(n in shown for n in names), names
        assert names.count("archive.drain") == 0
        for ref in refs:
            mine = [t for t in tasks.values() if ref in str(t.get("args"))]
            assert {t["name"] for t in mine} >= {"refunds.create", "refunds.poll"}
    finally:
        for child in children:
            child.stop()


def test_flower_shows_a_refund_stopped_for_a_human_as_failed_with_the_providers_code(
    flower_redis: str, env: dict[str, str], sandbox: SandboxAdmin, prefix: str, tmp_path: Path
) -> None:
    """MCE refuses a Create (422 CRYPTO_REFUND_NOT_PENDING: the payment is not refundable): the
    refund stops in needs_attention, and its task is FAILURE in Flower, the exception naming the
    code and the logId the ledger kept; a refund that completes stays SUCCESS."""
    run_env = {**env, "REDIS_URL": flower_redis, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    children: list[Child] = []
    try:
        worker = start_worker(tmp_path, run_env, name="stop-worker", concurrency=2)
        children.append(worker)
        wait_for_worker(worker)
        port = free_port()
        flower = Child("flower", procfile_flower_args(port), tmp_path / "flower.log", run_env)
        children.append(flower.start())
        url = f"http://127.0.0.1:{port}"

        def get(path: str) -> requests.Response:
            r = requests.get(url + path, auth=(USER, PASSWORD), timeout=10)
            r.raise_for_status()
            return r

        wait_until(lambda: get("/api/workers?refresh=1").json(), 60, "flower", flower)
        children.append(start_beat(tmp_path, run_env, name="stop-beat"))
        settings = load_settings(
            **{
                k.removeprefix("REFUNDS_").lower(): v
                for k, v in TEST_ENV.items()
                if k.startswith("REFUNDS_")
            },
            redis_url=flower_redis,
            mce_base_url=env["MCE_BASE_URL"],
        )
        ledger = Ledger.from_url(flower_redis)
        producer = Producer(settings, ledger=ledger)
        stopped, fine = prefix + "stop", prefix + "fine"
        sandbox.flag([f"{fine}-tx"], outcome="completed")  # the other payment is not refundable
        for ref in (stopped, fine):
            producer.submit(
                {
                    "originalTransactionType": 1,
                    "originalTransactionId": f"{ref}-tx",
                    "clientReference": ref,
                }
            )
        records = {r.client_reference: r for r in wait_final(ledger, [stopped, fine], 30)}
        held = records[stopped]
        assert held.state == "needs_attention"
        assert held.last_error is not None
        code, log_id = held.last_error["code"], held.last_error["logId"]
        assert code == "CRYPTO_REFUND_NOT_PENDING"
        assert log_id
        assert records[fine].state == "completed"

        deadline = time.monotonic() + 20
        while True:
            tasks = get("/api/tasks").json()
            failed = [
                t
                for t in tasks.values()
                if t.get("state") == "FAILURE" and _names_only(str(t.get("args")), stopped)
            ]
            if failed:
                break
            assert time.monotonic() < deadline, [
                (t.get("name"), t.get("state"), t.get("args")) for t in tasks.values()
            ]
            time.sleep(0.5)
        (task,) = failed
        assert task["name"] == "refunds.create"
        assert "RefundStoppedError" in task["exception"]
        assert code in task["exception"]
        assert log_id in task["exception"]
        assert settings.mce_client_secret.get_secret_value() not in task["exception"]
        # Failed once, not redelivered or retried: no other task of that refund after it.
        assert [t["state"] for t in tasks.values() if stopped in str(t.get("args"))] == [
            "FAILURE"
        ]
        fine_states = {t["state"] for t in tasks.values() if fine in str(t.get("args"))}
        assert fine_states == {"SUCCESS"}
        failed_list = get("/api/tasks?state=FAILURE").json()
        assert list(failed_list) == [task["uuid"]]
    finally:
        for child in children:
            child.stop()


def test_flower_connects_with_the_apps_transport_options(flower_redis: str) -> None:
    """``celery -A worker.app flower`` builds Flower on the app: its connection has our options."""
    code = (
        "import json\n"
        "from flower.app import Flower\n"
        "from worker.app import app\n"
        "f = Flower(capp=app)\n"
        "with f.capp.connection() as conn:\n"
        "    channel = conn.default_channel\n"
        "    print(json.dumps({'options': conn.transport_options,\n"
        "                      'visibility_timeout': channel.visibility_timeout}))\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REFUNDS_", "MCE_"))},
        "REFUNDS_PROFILE": "sandbox",
        "REDIS_URL": flower_redis,
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = celery_config(load_settings(profile="sandbox"))["broker_transport_options"]
    assert seen["options"] == expected
    assert seen["visibility_timeout"] == expected["visibility_timeout"]


def _names_only(args: str, ref: str) -> bool:
    """Flower's text of a step's arguments: the reference, then at most the integer fence."""
    return bool(re.fullmatch(rf"[\[(]'{re.escape(ref)}'(?:, \d+)?,?[\])]", args))
