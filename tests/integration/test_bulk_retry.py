"""Bulk operator retry after an outage (issue 11): ``refunds retry --state needs_attention
[--code] [--since] [--dry-run]`` and ``POST /operator/retry``, each refund through the single
retry; the old ``POST /refunds/retry`` (and the paths clients normalize to it) retries nothing.

A database of the private Redis with no worker: nothing moves unless the test (or the command)
moves it. The CLI runs as a subprocess, the web app as a real ``refunds web`` process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from config.settings import load_settings
from devstack.processes import free_port, start_web
from devstack.wait import wait_until
from refunds import actions
from refunds.models import State
from refunds.store.ledger import Ledger
from tests.integration.test_stats import backdated, intent

REPO = Path(__file__).resolve().parents[2]
KEY = "bulk-retry-key-83a1"
OPERATOR_KEY = "bulk-retry-operator-5c1e"


def stop(ledger: Ledger, ref: str, code: str, error_type: str = "MceServerError") -> None:
    ledger.submit(intent(ref), due_in=600)
    error = {"type": error_type, "message": "x", "status": 503, "code": code, "operation": "create"}
    ledger.transition(
        ledger.get(ref), State.NEEDS_ATTENTION, f"gave up: {code}", fields={"last_error": error}
    )


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": url, "REFUNDS_PROFILE": "sandbox", "USER": "t"}
    return subprocess.run(
        [sys.executable, "-m", "refunds.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def web(redis_db: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "REDIS_URL": redis_db,
        "REFUNDS_PROFILE": "sandbox",
        "REFUNDS_API_KEY": KEY,
        "REFUNDS_OPERATOR_KEYS": "ops-carol:" + OPERATOR_KEY,
    }
    child = start_web(tmp_path, env, port=port)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(url + "/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    wait_until(up, 60, what="web", child=child)
    yield url
    child.stop()


def post(url: str, body: dict[str, Any], key: str | None = OPERATOR_KEY) -> requests.Response:
    headers = {"X-API-Key": key} if key else {}
    return requests.post(url + "/operator/retry", json=body, headers=headers, timeout=30)


def test_bulk_retry_by_code_and_since_from_the_cli_and_over_http(
    redis_db: str, web: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger.from_url(redis_db)
    stop(ledger, "n-1", "SERVICE_UNAVAILABLE")
    stop(ledger, "n-2", "SERVICE_UNAVAILABLE")
    stop(ledger, "n-3", "CRYPTO_REFUND_NOT_PENDING")
    stop(ledger, "n-4", None, error_type="MceConnectionError")  # type: ignore[arg-type]
    with backdated(monkeypatch, 3 * 3600):
        stop(ledger, "old-1", "SERVICE_UNAVAILABLE")
    ledger.submit(intent("busy-1"), due_in=600)  # in flight: never matched

    dry = cli(
        redis_db,
        "retry",
        "--state",
        "needs_attention",
        "--code",
        "service_unavailable",
        "--since",
        "1h",
        "--dry-run",
        "--reason",
        "outage over",
        "--json",
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "dryRun": True,
        "retried": 2,
        "skipped": 0,
        "references": ["n-1", "n-2"],
        "skippedReasons": {},
    }
    assert ledger.counts()["needs_attention"] == 5  # nothing written

    done = cli(
        redis_db,
        "retry",
        "--state",
        "needs_attention",
        "--code",
        "SERVICE_UNAVAILABLE",
        "--since",
        "1h",
        "--by",
        "ops-bob",
        "--reason",
        "outage over",
    )
    assert done.returncode == 0, done.stderr
    assert "retried 2, skipped 0" in done.stdout
    for ref in ("n-1", "n-2"):
        record = ledger.get(ref)
        assert record.state == State.RECEIVED
        assert record.key_generation == 1 and record.last_error is None
        assert record.history[-1].actor == "ops-bob"
        assert record.history[-1].reason.startswith("retried: outage over; previous error: {")
        assert "SERVICE_UNAVAILABLE" in record.history[-1].reason  # the evidence is kept
    assert ledger.get("old-1").state == State.NEEDS_ATTENTION  # stopped before --since
    assert ledger.get("n-3").state == State.NEEDS_ATTENTION  # another code

    # An error without a provider code is matched by its type.
    typed = cli(
        redis_db,
        "retry",
        "--state",
        "needs_attention",
        "--code",
        "MceConnectionError",
        "--reason",
        "network fixed",
        "--json",
    )
    assert json.loads(typed.stdout)["references"] == ["n-4"]

    # The single retry is still there, and REF with --state is refused.
    assert cli(redis_db, "retry", "old-1", "--reason", "one").returncode == 0
    assert ledger.get("old-1").state == State.RECEIVED
    both = cli(redis_db, "retry", "n-3", "--state", "needs_attention", "--reason", "x")
    assert both.returncode == 2 and "either REF or --state" in both.stderr
    other = cli(redis_db, "retry", "--state", "received", "--reason", "x")
    assert other.returncode == 2

    # HTTP: operator-authenticated, the same filters as JSON.
    assert post(web, {"by": "ops", "reason": "x"}, key=None).status_code == 401
    assert post(web, {"by": "ops", "reason": "x"}, key="wrong").status_code == 401
    # The intake key is no operator credential.
    assert post(web, {"by": "ops", "reason": "x"}, key=KEY).status_code == 403
    since_future = post(web, {"since": "2999-01-01T00:00:00Z", "by": "ops", "reason": "x"})
    assert since_future.status_code == 200 and since_future.json()["retried"] == 0
    dry_http = post(
        web, {"code": "crypto_refund_not_pending", "dryRun": True, "by": "o", "reason": "x"}
    )
    assert dry_http.json()["references"] == ["n-3"] and dry_http.json()["dryRun"] is True
    assert ledger.get("n-3").state == State.NEEDS_ATTENTION
    answer = post(
        web,
        {
            "state": "needs_attention",
            "code": "CRYPTO_REFUND_NOT_PENDING",
            "by": "mallory",  # ignored: who acted is the operator key's name
            "reason": "provider fixed it",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "dryRun": False,
        "retried": 1,
        "skipped": 0,
        "references": ["n-3"],
        "skippedReasons": {},
    }
    assert ledger.get("n-3").state == State.RECEIVED
    assert ledger.get("n-3").history[-1].actor == "ops-carol"
    bad_state = post(web, {"state": "received", "by": "o", "reason": "x"})
    assert bad_state.status_code == 422
    assert ledger.counts().get("needs_attention", 0) == 0


def test_no_reference_path_reaches_the_bulk_retry(redis_db: str, web: str) -> None:
    """``POST /refunds/./retry`` is sent by requests as ``POST /refunds/retry`` (dot segments are
    removed, RFC 3986): it once retried every refund in needs_attention."""
    ledger = Ledger.from_url(redis_db)
    stop(ledger, "dot-1", "SERVICE_UNAVAILABLE")
    stop(ledger, "dot-2", "CRYPTO_REFUND_NOT_PENDING")
    headers = {"X-API-Key": OPERATOR_KEY}
    answers = {
        path: requests.post(web + path, json={"reason": "x"}, headers=headers, timeout=30)
        for path in ("/refunds/./retry", "/refunds/../retry", "/refunds/retry")
    }
    assert answers["/refunds/../retry"].status_code == 404  # sent as /retry
    for path in ("/refunds/./retry", "/refunds/retry"):
        assert answers[path].status_code == 410, path
        assert "POST /operator/retry" in answers[path].json()["detail"]
    assert ledger.get("dot-1").state == State.NEEDS_ATTENTION
    assert ledger.get("dot-2").state == State.NEEDS_ATTENTION
    assert all(len(ledger.get(r).history) == 2 for r in ("dot-1", "dot-2"))
    # The new path does retry (the operator meant it).
    moved = post(web, {"code": "SERVICE_UNAVAILABLE", "reason": "outage over"})
    assert moved.status_code == 200 and moved.json()["references"] == ["dot-1"]


def test_a_refund_that_moved_meanwhile_is_skipped_with_the_reason(redis_db: str) -> None:
    ledger = Ledger.from_url(redis_db)
    settings = load_settings(profile="sandbox", redis_url=redis_db)
    stop(ledger, "m-1", "SERVICE_UNAVAILABLE")
    stop(ledger, "m-2", "SERVICE_UNAVAILABLE")
    chosen = actions.select_for_retry(ledger)
    assert [r.client_reference for r in chosen] == ["m-1", "m-2"]
    actions.retry(
        ledger, settings, "m-1", actor="someone", reason="first"
    )  # a colleague was faster
    seen: list[tuple[str, str | None]] = []
    report = actions.retry_many(
        ledger,
        settings,
        chosen,
        actor="me",
        reason="bulk",
        on_each=lambda ref, _result, why: seen.append((ref, why)),
    )
    assert list(report.retried) == ["m-2"]
    assert report.skipped == {"m-1": "it is received; only needs_attention refunds are retried"}
    assert seen == [("m-1", report.skipped["m-1"]), ("m-2", None)]
    assert ledger.get("m-1").key_generation == 1  # retried once, not twice
