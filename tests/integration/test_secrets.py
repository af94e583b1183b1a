"""Secrets never leak: a full production-profile run, then every place an operator can read.

The run has its own stack (database 3 of the private Redis, its own sandbox with distinctive
credentials, its own worker, beat and a real Flower process), so the pipeline runs with
``REFUNDS_PROFILE=production`` and random secrets nobody else uses. It goes through token refreshes
(2-second tokens), revoked tokens (401s and replays), injected 503s (also on the token call) and
business refusals, so error paths write their texts too.

Every bearer token the cluster received is known exactly: a Redis MONITOR connection sees each
``HSET rp:mce:token`` the token cache makes (the only place a fetched token is written), and the
count is checked against the sandbox's own count of issued tokens. Then none of the client secret,
the webhook secret, the API key, the callback secret, Flower's password nor any of those tokens
(nor a 16-character piece of one) may appear in the process logs (worker and beat at DEBUG, the
most they ever log), Flower's API and pages, the Redis database (records, queues, counters:
everything but the token cache itself), ``refunds list --json`` or the records' ``lastError``.

The searches are proven to work: the same search finds the live token in the unfiltered Redis dump,
and finds the refunds' references in the logs and in Flower.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import requests

from config.settings import load_settings
from devstack.processes import (
    Child,
    free_port,
    start_beat,
    start_flower,
    start_sandbox,
    start_web,
    start_worker,
    wait_for_worker,
)
from devstack.wait import wait_until
from refunds.mce.auth import TOKEN_KEY
from refunds.models import State
from refunds.producer import Producer
from refunds.store.ledger import Ledger
from tests.conftest import TEST_ENV, RedisDatabases, SandboxAdmin, wait_final

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "refunds.cli"]
FLOWER_USER = "ops"
FLAGGED_PER_WAVE = 8
UNFLAGGED_PER_WAVE = 1  # no pending refund at the provider: CRYPTO_REFUND_NOT_PENDING
WAVES = 3
REVOKES_PER_WAVE = 3
PIECE = 16  # a leaked fragment this long of a token or secret also counts


# --- searching ------------------------------------------------------------------------------------


def pieces(secret: str) -> set[str]:
    """The secret, and its head and tail: a truncated or partly masked copy is still a leak."""
    return {secret, secret[:PIECE], secret[-PIECE:]} if len(secret) > PIECE else {secret}


def leaks(text: str, secrets_: dict[str, str]) -> list[str]:
    """Names of the secrets (or pieces of them) found in ``text``."""
    return sorted(name for name, value in secrets_.items() if any(p in text for p in pieces(value)))


def dump_redis(client: redis.Redis, skip: frozenset[str] = frozenset()) -> str:
    """Every key and value of the database as text; kombu message bodies (base64) decoded too."""
    lines: list[str] = []
    for key in sorted(str(k) for k in client.scan_iter(count=1000)):
        if key in skip:
            continue
        kind = str(client.type(key))
        values: list[str]
        if kind == "string":
            values = [str(client.get(key))]
        elif kind == "hash":
            values = [f"{k}={v}" for k, v in cast(dict[str, str], client.hgetall(key)).items()]
        elif kind == "list":
            values = [str(v) for v in client.lrange(key, 0, -1)]
        elif kind == "set":
            values = [str(v) for v in client.smembers(key)]
        elif kind == "zset":
            scored = cast(list[tuple[str, float]], client.zrange(key, 0, -1, withscores=True))
            values = [f"{m}={s}" for m, s in scored]
        else:
            values = [f"<{kind}>"]
        lines.append(f"{key}: " + " | ".join(values))
        lines += [_decoded_body(v) for v in values]
    return "\n".join(line for line in lines if line)


def _decoded_body(value: str) -> str:
    """A kombu message keeps its body base64-encoded; decode it so arguments are searched."""
    raw = value.split("=", 1)[-1] if not value.startswith("{") else value
    try:
        message = json.loads(raw)
        if message.get("properties", {}).get("body_encoding") == "base64":
            return base64.b64decode(message["body"]).decode("utf-8", "replace")
    except (ValueError, AttributeError, TypeError, KeyError):
        pass
    return ""


# --- the run --------------------------------------------------------------------------------------


class TokenWatch:
    """Every token the cluster stores, seen through MONITOR, plus periodic direct reads."""

    def __init__(self, url: str, db: int) -> None:
        self.db = db
        self.monitored: set[str] = set()
        self.sampled: set[str] = set()
        self.canary: tuple[str, str] | None = None  # (token, a dump of Redis that holds it)
        # No socket timeout: redis-py drops a connection whose read times out. ``stop`` wakes the
        # reader with a PING instead (the monitor sees every command).
        self._monitor = redis.Redis.from_url(url, decode_responses=True)
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]

    def start(self) -> TokenWatch:
        for t in self._threads:
            t.start()
        assert self._ready.wait(10), "MONITOR did not start"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._client.ping()
        for t in self._threads:
            t.join(10)

    def _watch(self) -> None:
        with self._monitor.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            while not self._stop.is_set():
                command = monitor.next_command()
                if command.get("db") != self.db:
                    continue
                words = str(command.get("command", "")).split()
                if words[:2] == ["HSET", TOKEN_KEY] and "token" in words[2::2]:
                    i = words.index("token", 2)
                    self.monitored.add(words[i + 1])

    def _sample(self) -> None:
        while not self._stop.is_set():
            token = self._client.hget(TOKEN_KEY, "token")
            if token:
                self.sampled.add(str(token))
                if self.canary is None:
                    self.canary = (str(token), dump_redis(self._client))
            time.sleep(0.02)


@dataclass
class Run:
    url: str
    env: dict[str, str]
    logdir: Path
    sandbox: SandboxAdmin
    flower: str
    auth: tuple[str, str]
    secrets: dict[str, str]
    tokens: TokenWatch
    refs: list[str]
    not_pending: list[str]
    snapshots: list[str] = field(default_factory=list)  # `refunds list --json` during the run
    children: list[Child] = field(default_factory=list)

    @property
    def all_secrets(self) -> dict[str, str]:
        found = dict(self.secrets)
        for i, token in enumerate(sorted(self.tokens.monitored | self.tokens.sampled)):
            found[f"bearer token #{i}"] = token
        return found

    def logs(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log"))}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def get(self, path: str, **params: Any) -> requests.Response:
        r = requests.get(self.flower + path, params=params, auth=self.auth, timeout=10)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        return r


@pytest.fixture(scope="module")
def run(redis_dbs: RedisDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    url = redis_dbs.take()
    logdir = tmp_path_factory.mktemp("secrets-logs")
    client_id = f"merchant-{secrets.token_hex(6)}"
    found = {
        "MCE_CLIENT_SECRET": secrets.token_hex(16),
        "MCE_WEBHOOK_SECRET": secrets.token_hex(16),
        "FLOWER_PASSWORD": secrets.token_hex(16),
        # Secrets of the HTTP API and of merchant callbacks: unused by these processes, but in
        # their environment, so a settings dump would show them.
        "REFUNDS_API_KEY": secrets.token_hex(16),
        "REFUNDS_CALLBACK_SECRET": secrets.token_hex(16),
    }
    children: list[Child] = []
    watch: TokenWatch | None = None
    try:
        sandbox_child, sandbox_url = start_sandbox(
            logdir,
            extra_args=[
                "--client-id",
                client_id,
                "--client-secret",
                found["MCE_CLIENT_SECRET"],
                "--verbose",  # every request line in its log: more to search
            ],
        )
        children.append(sandbox_child)
        sandbox = SandboxAdmin(sandbox_url)
        web_port = free_port()
        web_url = f"http://127.0.0.1:{web_port}"
        sandbox.reset(
            # Webhooks signed with the real secret go to the web app, which is in this run too.
            webhook_url=f"{web_url}/webhooks/mce",
            webhook_secret=found["MCE_WEBHOOK_SECRET"],
            token_ttl_seconds=2,
            processing_seconds=1.0,
            error_rates={"503": 0.1},
            retry_after_seconds=0.2,
            fault_operations=["token", "create", "confirm", "get"],
        )
        env = {
            **TEST_ENV,
            "REFUNDS_PROFILE": "production",
            "REFUNDS_LOG_LEVEL": "DEBUG",  # the most a process ever logs
            "REDIS_URL": url,
            "MCE_BASE_URL": sandbox_url,
            "MCE_CLIENT_ID": client_id,
            "MCE_CLIENT_SECRET": found["MCE_CLIENT_SECRET"],
            "MCE_WEBHOOK_SECRET": found["MCE_WEBHOOK_SECRET"],
            "REFUNDS_API_KEY": found["REFUNDS_API_KEY"],
            "REFUNDS_CALLBACK_SECRET": found["REFUNDS_CALLBACK_SECRET"],
            # the session's archive (tests/conftest.py): its CLI runs get no other environment
            "REFUNDS_DATABASE_URL": os.environ["REFUNDS_DATABASE_URL"],
        }
        web = start_web(logdir, env, port=web_port)
        children.append(web)
        wait_until(
            lambda: requests.get(web_url + "/healthz", timeout=1).ok, 30, what="web", child=web
        )
        worker = start_worker(logdir, env, name="worker", concurrency=4)
        children.append(worker)
        wait_for_worker(worker)
        children.append(start_beat(logdir, env))
        flower_port = free_port()
        children.append(
            start_flower(
                logdir,
                env,
                port=flower_port,
                basic_auth=f"{FLOWER_USER}:{found['FLOWER_PASSWORD']}",
            )
        )
        flower = f"http://127.0.0.1:{flower_port}"
        auth = (FLOWER_USER, found["FLOWER_PASSWORD"])

        def flower_sees_worker() -> bool:
            r = requests.get(flower + "/api/workers", params={"refresh": 1}, auth=auth, timeout=5)
            return r.ok and bool(r.json())

        wait_until(flower_sees_worker, 60, what="flower with a worker", child=children[-1])

        watch = TokenWatch(url, int(url.rsplit("/", 1)[1])).start()
        settings = load_settings(
            profile="production",
            redis_url=url,
            mce_base_url=sandbox_url,
            mce_client_id=client_id,
            mce_client_secret=found["MCE_CLIENT_SECRET"],
            mce_webhook_secret=found["MCE_WEBHOOK_SECRET"],
        )
        producer = Producer(settings)
        prefix = f"sec{secrets.token_hex(3)}-"
        the_run = Run(
            url=url,
            env={**env, "REFUNDS_LOG_LEVEL": "INFO"},
            logdir=logdir,
            sandbox=sandbox,
            flower=flower,
            auth=auth,
            secrets=found,
            tokens=watch,
            refs=[],
            not_pending=[],
            children=children,
        )
        for wave in range(WAVES):
            flagged = [f"{prefix}{wave}-{i}" for i in range(FLAGGED_PER_WAVE)]
            sandbox.flag([f"tx-{r}" for r in flagged])
            unflagged = [f"{prefix}{wave}-np{i}" for i in range(UNFLAGGED_PER_WAVE)]
            for i, ref in enumerate(flagged + unflagged):
                intent = {
                    "originalTransactionType": 1,
                    "originalTransactionId": f"tx-{ref}",
                    "clientReference": ref,
                }
                if i % 2:  # half over HTTP, with the API key
                    r = requests.post(
                        web_url + "/refunds",
                        json=intent,
                        timeout=10,
                        headers={"X-API-Key": found["REFUNDS_API_KEY"]},
                    )
                    assert r.status_code == 201, r.text
                else:
                    producer.submit(intent)
            the_run.refs += flagged + unflagged
            the_run.not_pending += unflagged
            # Revoked tokens: the next call meets a 401, invalidates the token and replays. A
            # revocation just before a planned refresh causes none, so there are several.
            for _ in range(REVOKES_PER_WAVE):
                time.sleep(0.5)
                sandbox.revoke_tokens()
            snapshot = the_run.cli("list", "--limit", "0", "--json")
            assert snapshot.returncode == 0, snapshot.stderr
            the_run.snapshots.append(snapshot.stdout)
        wait_final(Ledger.from_url(url), the_run.refs, 120)
        time.sleep(2.5)  # a token lifetime more, and Flower's last events
        watch.stop()
        yield the_run
    finally:
        if watch is not None:
            watch.stop()
        for child in reversed(children):
            child.stop()
        redis_dbs.give_back(url)


# --- the proofs that the searches can fail --------------------------------------------------------


def test_every_issued_token_is_known_and_the_search_finds_a_token_where_it_lives(run: Run) -> None:
    counters = run.sandbox.counters()
    tokens = run.tokens
    assert counters["tokens_issued"] >= 3  # lifetimes ran out and revocations forced new ones
    assert len(tokens.monitored) == counters["tokens_issued"], (
        "every token the sandbox issued must have been seen stored by the token cache"
    )
    assert tokens.sampled, "direct reads of the token cache saw no token"
    assert tokens.sampled <= tokens.monitored
    # The run did go through the paths that could leak: 401s, 503s (token call included).
    responses = counters["responses"]
    assert sum(by_status.get("401", 0) for by_status in responses.values()) >= 1, responses
    assert counters["faults"].get("503", 0) >= 1, counters["faults"]
    # The canary: the unfiltered Redis dump holds the live token, and the search finds it.
    assert tokens.canary is not None
    token, dump = tokens.canary
    assert leaks(dump, {"token": token}) == ["token"]
    assert leaks(dump.replace(token, "x" * 10), {"token": token}) == []


# --- the surfaces ---------------------------------------------------------------------------------


def test_no_secret_or_token_in_any_process_log(run: Run) -> None:
    logs = run.logs()
    assert {"worker.log", "beat.log", "flower.log", "sandbox.log", "web.log"} <= set(logs)
    for name, text in logs.items():
        assert leaks(text, run.all_secrets) == [], name
        assert "bearer " not in text.lower(), name  # no Authorization header, not even masked
    # The logs are not empty: the same search finds what belongs there.
    assert all(ref in logs["worker.log"] for ref in run.refs)
    assert "POST /v1.0/oauth/token" in logs["sandbox.log"]


def test_no_secret_or_token_in_flower_api(run: Run) -> None:
    def tasks_seen() -> bool:
        names = {t.get("name") for t in run.get("/api/tasks").json().values()}
        # The tick sends no task events (issue 11), so Flower lists only refund steps (Confirm
        # runs inside refunds.create: REFUNDS_CONFIRM_INLINE).
        return {"refunds.create", "refunds.poll"} <= names

    wait_until(tasks_seen, 20, what="every task type in Flower")
    tasks = run.get("/api/tasks").json()
    assert len(tasks) > len(run.refs)
    details = [run.get(f"/api/task/info/{task_id}").json() for task_id in list(tasks)[:50]]
    for name, text in {
        "/api/tasks": json.dumps(tasks),
        "/api/task/info": json.dumps(details),
        "/api/workers": run.get("/api/workers", refresh=1).text,
        "/api/task/types": run.get("/api/task/types").text,
        "/api/queues/length": run.get("/api/queues/length").text,
        "/metrics": run.get("/metrics").text,
    }.items():
        assert leaks(text, run.all_secrets) == [], name
    fields = ("args", "kwargs", "result", "exception", "traceback")
    everything = " ".join(str(t.get(f)) for t in tasks.values() for f in fields)
    assert all(ref in everything for ref in run.refs)  # task arguments are the references


def test_no_secret_or_token_in_flower_pages(run: Run) -> None:
    tasks = run.get("/api/tasks").json()
    workers = run.get("/api/workers").json()
    pages = ["/", "/workers", "/tasks", "/broker"]
    pages += [f"/worker/{name}" for name in workers]
    by_name: dict[str, str] = {}
    for task_id, task in tasks.items():
        by_name.setdefault(str(task.get("name")), task_id)
    pages += [f"/task/{task_id}" for task_id in by_name.values()]
    texts = {page: run.get(page).text for page in pages}
    texts["/tasks/datatable"] = run.get(
        "/tasks/datatable",
        draw=1,
        start=0,
        length=1000,
        **{
            "search[value]": "",
            "order[0][column]": 0,
            "columns[0][data]": "name",
            "order[0][dir]": "asc",
        },
    ).text
    for page, text in texts.items():
        assert leaks(text, run.all_secrets) == [], page
    assert any(ref in texts["/tasks/datatable"] for ref in run.refs)
    assert "refunds.provider" in texts["/broker"]


def test_no_secret_or_token_in_records_or_error_texts(run: Run) -> None:
    result = run.cli("list", "--limit", "0", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert {r["clientReference"] for r in records} == set(run.refs)
    for i, text in enumerate([result.stdout, *run.snapshots]):
        assert leaks(text, run.all_secrets) == [], f"refunds list snapshot {i}"
    errors = [r["lastError"] for r in records if r["lastError"]]
    errors += [r["lastError"] for s in run.snapshots for r in json.loads(s) if r["lastError"]]
    assert leaks(json.dumps(errors), run.all_secrets) == []
    held = {r["clientReference"]: r for r in records if r["state"] == State.NEEDS_ATTENTION}
    assert set(held) == set(run.not_pending)
    assert {r["lastError"]["code"] for r in held.values()} == {"CRYPTO_REFUND_NOT_PENDING"}
    # The whole database too (records, timers, counters, queued and unacked Celery messages),
    # all but the token cache, which is the one place a token is meant to be.
    client = redis.Redis.from_url(run.url, decode_responses=True)
    assert leaks(dump_redis(client, skip=frozenset({TOKEN_KEY})), run.all_secrets) == []


# --- structured logs ------------------------------------------------------------------------------

# What Celery prints (not logs) when a worker stops; everything else after start-up is a log record.
SHUTDOWN = re.compile(r"^worker: (Warm|Cold) shutdown")


def _entries(text: str) -> list[dict[str, Any] | str]:
    """Each non-blank line: the JSON object it holds, or the raw line when it is not one."""
    out: list[dict[str, Any] | str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = line
        out.append(entry if isinstance(entry, dict) else line)
    return out


def _unstructured_after_start(
    entries: list[dict[str, Any] | str], started: Callable[[dict[str, Any]], bool]
) -> list[str]:
    """Lines that are not JSON after the process said it started. Before that, Celery prints its
    banner (and Python its warnings) to the same file: output, not log records."""
    seen_start = False
    bad: list[str] = []
    for entry in entries:
        if isinstance(entry, dict):
            seen_start = seen_start or started(entry)
        elif seen_start and not SHUTDOWN.match(entry):
            bad.append(entry)
    return bad if seen_start else ["(the start-up message was never logged as JSON)"]


def test_worker_and_beat_log_json_lines_with_refund_ids(run: Run) -> None:
    logs = run.logs()
    worker = _entries(logs["worker.log"])
    beat = _entries(logs["beat.log"])
    assert _unstructured_after_start(worker, lambda e: "ready." in str(e.get("msg"))) == []
    assert _unstructured_after_start(beat, lambda e: e.get("msg") == "beat: Starting...") == []
    worker_json = [e for e in worker if isinstance(e, dict)]
    beat_json = [e for e in beat if isinstance(e, dict)]
    assert len(worker_json) > 10 * len(run.refs)  # not vacuous: the run logged a lot, all JSON
    assert any(str(e.get("msg")).startswith("Scheduler: Sending due task") for e in beat_json)
    for entry in worker_json + beat_json:
        assert {"ts", "level", "logger", "msg"} <= set(entry), entry

    steps = [e for e in worker_json if e.get("logger") == "refunds.steps"]
    assert steps
    for entry in steps:
        assert entry.get("client_reference"), entry
        assert entry.get("task_id"), entry
        assert str(entry.get("task_name", "")).startswith("refunds."), entry
    # A refund becomes final in a worker (a poll) or in the web app (MCE's webhook, the fast path).
    web = [e for e in _entries(logs["web.log"]) if isinstance(e, dict)]
    web_steps = [e for e in web if e.get("logger") == "refunds.steps"]
    assert all(e.get("client_reference") for e in web_steps)
    finals = [e for e in steps + web_steps if str(e.get("msg", "")).startswith("refund final")]
    assert {e["client_reference"] for e in finals} == set(run.refs) - set(run.not_pending)
    assert all(e.get("refund_id") for e in finals)
    confirms = [e for e in steps if str(e.get("msg", "")).startswith("confirm attempt")]
    assert confirms and all(e.get("refund_id") for e in confirms)
    held = [e for e in steps if str(e.get("msg", "")).startswith("needs attention")]
    assert {e["client_reference"] for e in held} == set(run.not_pending)
    assert all(e.get("code") == "CRYPTO_REFUND_NOT_PENDING" and e.get("log_id") for e in held)


# --- extra fields ---------------------------------------------------------------------------------

# A process that logs secrets in extra fields, as a careless caller (or a library) might: under a
# secret's name, nested in headers, inside a URL or a bearer header in some text, as a SecretStr.
CARELESS_LOGGER = """
import json, logging, sys
from pydantic import SecretStr
from refunds.ops.logs import configure
s = json.loads(sys.argv[1])
configure("DEBUG", json_lines=True)
log = logging.getLogger("refunds.careless")
log.info("token call", extra={
    "client_reference": "careless-1",
    "client_secret": s["client_secret"],
    "MCE_WEBHOOK_SECRET": s["webhook_secret"],
    "api_key": s["api_key"],
    "request": {"headers": {"Authorization": "Bearer " + s["token"]}, "path": "/oauth/token"},
    "attempts": [{"password": s["redis_password"]}],
    "broker": "redis://:" + s["redis_password"] + "@redis:6379/0",
    "note": "replayed with Bearer " + s["token"],
    "callback_secret": SecretStr(s["callback_secret"]),
    "outcome": "retry",
})
log.warning("connecting to redis://app:%s@redis:6379/0", s["redis_password"])
"""


def test_no_secret_in_extra_fields_of_a_log_line() -> None:
    found = {
        name: secrets.token_urlsafe(24)
        for name in (
            "client_secret",
            "webhook_secret",
            "api_key",
            "token",
            "redis_password",
            "callback_secret",
        )
    }
    proc = subprocess.run(
        [sys.executable, "-c", CARELESS_LOGGER, json.dumps(found)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert leaks(proc.stderr, found) == []
    # Not vacuous: both lines are there with their harmless fields, and the search finds a secret
    # in the same text once one is put back.
    first, second = (json.loads(line) for line in proc.stderr.splitlines())
    assert (first["client_reference"], first["outcome"]) == ("careless-1", "retry")
    assert first["request"]["path"] == "/oauth/token"
    assert second["msg"] == "connecting to redis://app:***@redis:6379/0"
    assert leaks(proc.stderr + found["token"], found) == ["token"]
