"""The real topology: the Procfile under honcho, Flower's view of it, and start-up refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from config.settings import load_settings
from devstack.processes import free_port
from devstack.sandbox_admin import SandboxAdmin
from devstack.wait import wait_until
from refunds.models import State
from refunds.producer import Producer
from refunds.store.ledger import Ledger
from tests.conftest import wait_final

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_worker_refuses_placeholder_secrets_with_one_line_and_no_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCE_", "REFUNDS_"))}
    env.update(
        {
            "MCE_BASE_URL": "https://mce.example",
            "MCE_CLIENT_ID": "m",
            "MCE_CLIENT_SECRET": "changeme",
            "MCE_WEBHOOK_SECRET": "a-real-looking-secret",
        }
    )
    proc = subprocess.run(
        [str(BIN / "celery"), "-A", "worker.app", "worker"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "MCE_CLIENT_SECRET is a placeholder value" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "a-real-looking-secret" not in proc.stderr + proc.stdout


def test_procfile_topology_runs_refunds_and_flower_sees_them(
    redis_db: str, tmp_path: Path, prefix: str
) -> None:
    # A database of its own: the session's own worker (db 0) must not take these tasks.
    url = redis_db
    sandbox_port, flower_port, web_port = free_port(), free_port(), free_port()
    envfile = tmp_path / "procfile.env"
    envfile.write_text(
        "\n".join(
            [
                "REFUNDS_PROFILE=sandbox",
                f"REDIS_URL={url}",
                f"MCE_BASE_URL=http://127.0.0.1:{sandbox_port}",
                f"SANDBOX_PORT={sandbox_port}",
                f"FLOWER_PORT={flower_port}",
                f"WEB_PORT={web_port}",
                "FLOWER_BASIC_AUTH=ops:test-password",
                f"BEAT_SCHEDULE_FILE={tmp_path / 'beat-schedule'}",
                "WORKER_CONCURRENCY=2",
                "REFUNDS_POLL_SCHEDULE=0.2,0.5",
                "REFUNDS_TICK_INTERVAL=0.5",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    log = (tmp_path / "honcho.log").open("wb")
    honcho = subprocess.Popen(
        [str(BIN / "honcho"), "-f", "Procfile", "-e", str(envfile), "start"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{sandbox_port}"
        flower = f"http://127.0.0.1:{flower_port}"
        auth = ("ops", "test-password")
        wait_until(SandboxAdmin(base).healthy, 60, what="sandbox")

        def flower_sees_worker() -> bool:
            r = requests.get(flower + "/api/workers?refresh=1", auth=auth, timeout=5)
            return r.ok and bool(r.json())

        wait_until(flower_sees_worker, 60, what="flower with a worker")
        refs = [f"{prefix}{i}" for i in range(5)]
        requests.post(
            base + "/sandbox/reset", json={"processing_seconds": 0.3}, timeout=5
        ).raise_for_status()
        requests.post(
            base + "/sandbox/payments",
            timeout=5,
            json={
                "payments": [
                    {"originalTransactionType": 1, "originalTransactionId": f"tx-{r}"} for r in refs
                ]
            },
        ).raise_for_status()
        web = f"http://127.0.0.1:{web_port}"
        wait_until(lambda: requests.get(web + "/healthz", timeout=1).ok, 60, what="web")
        settings = load_settings(profile="sandbox", redis_url=url, mce_base_url=base)
        producer = Producer(settings)
        for i, ref in enumerate(refs):
            intent = {
                "originalTransactionType": 1,
                "originalTransactionId": f"tx-{ref}",
                "clientReference": ref,
            }
            if i % 2:  # half through the Python API, half through the HTTP API
                producer.submit(intent)
            else:
                r = requests.post(
                    web + "/refunds",
                    json=intent,
                    timeout=5,
                    headers={"X-API-Key": "sandbox-api-key"},
                )
                assert r.status_code == 201, r.text
        records = wait_final(Ledger.from_url(url), refs, 60)
        assert {r.state for r in records} == {State.COMPLETED}

        assert requests.get(flower + "/api/workers", timeout=2).status_code == 401  # auth on

        def tasks_seen() -> bool:
            tasks = requests.get(flower + "/api/tasks", auth=auth, timeout=2).json()
            names = {t.get("name") for t in tasks.values()}
            # Confirm runs inside refunds.create (REFUNDS_CONFIRM_INLINE): no task of its own.
            return {"refunds.create", "refunds.poll"} <= names

        wait_until(tasks_seen, 20, what="refund tasks in Flower")
        tasks = requests.get(flower + "/api/tasks", auth=auth, timeout=2).json()
        create_args = {t["args"] for t in tasks.values() if t.get("name") == "refunds.create"}
        assert any(refs[0] in (a or "") for a in create_args)  # ids only, readable
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
        log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{sandbox_port}/sandbox/healthz", timeout=0.5)
        except requests.ConnectionError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the sandbox outlived honcho")
