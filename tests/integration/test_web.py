"""The HTTP API and MCE's webhook, through a real uvicorn server, worker, beat and sandbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.localstack import (
    Child,
    free_port,
    start_beat,
    start_sandbox,
    start_web,
    start_worker,
    wait_for_worker,
    wait_until,
)
from refunds.models import State
from refunds.store.keys import WEBHOOKS, event_key
from refunds.store.ledger import Ledger
from tests.conftest import SandboxAdmin, wait_final

KEY = {"X-API-Key": "test-api-key-4f1b"}
# Operator routes take an operator key; the history records the name it is configured under.
OPERATOR_KEY = {"X-API-Key": "test-operator-key-7d2a"}
SECRET = "whsec-test-7d2a9c"


class Web:
    def __init__(self, url: str, redis_url: str, sandbox: SandboxAdmin) -> None:
        self.url = url
        self.ledger = Ledger.from_url(redis_url)
        self.sandbox = sandbox
        self.http = requests.Session()
        self.log_path = Path()

    def submit(self, intent: dict[str, Any]) -> requests.Response:
        return self.http.post(self.url + "/refunds", json=intent, headers=KEY, timeout=10)

    def hook(
        self,
        event: dict[str, Any] | bytes,
        *,
        secret: str = SECRET,
        ts_ms: int | None = None,
        sig: str | None = None,
    ) -> requests.Response:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        return requests.post(  # no shared Session: tests call this from several threads
            self.url + "/webhooks/mce",
            data=body,
            timeout=10,
            headers={
                "Content-Type": "application/json",
                "X-Signature": signed(body, secret=secret, ts_ms=ts_ms, sig=sig),
            },
        )


def signed(
    body: bytes, *, secret: str = SECRET, ts_ms: int | None = None, sig: str | None = None
) -> str:
    """MCE's ``X-Signature: t=<epoch ms>,v0=<hex HMAC-SHA256 of "{t}.{body}">``."""
    stamp = str(ts_ms if ts_ms is not None else time.time_ns() // 1_000_000)
    mac = sig or hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v0={mac}"


@pytest.fixture(scope="module")
def web_stack(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[Web]:
    """Database 4 of the private Redis: its own sandbox (with webhooks), web, worker and beat."""
    logdir = tmp_path_factory.mktemp("web")
    url = redis_url.rsplit("/", 1)[0] + "/4"
    redis.Redis.from_url(url).flushdb()  # our private server's database, not the shared Redis
    web_port = free_port()
    sandbox_child, sandbox_url = start_sandbox(
        logdir,
        extra_args=[
            "--webhook-url",
            f"http://127.0.0.1:{web_port}/webhooks/mce",
            "--webhook-secret",
            SECRET,
        ],
    )
    wenv = {
        **env,
        "REDIS_URL": url,
        "MCE_BASE_URL": sandbox_url,
        "MCE_WEBHOOK_SECRET": SECRET,
        "REFUNDS_API_KEY": KEY["X-API-Key"],
        "REFUNDS_OPERATOR_KEYS": "ann:" + OPERATOR_KEY["X-API-Key"],
        # Slow polls: with webhooks on, the webhook should finish refunds, not the poller.
        "REFUNDS_POLL_SCHEDULE": "3,5",
    }
    children: list[Child] = [sandbox_child]
    web = start_web(logdir, wenv, port=web_port)
    children.append(web)
    wait_until(
        lambda: requests.get(f"http://127.0.0.1:{web_port}/healthz", timeout=1).ok, 30, "web", web
    )
    worker = start_worker(logdir, wenv, name="webworker", concurrency=4)
    wait_for_worker(worker)
    children += [worker, start_beat(logdir, wenv, name="webbeat")]
    stack = Web(f"http://127.0.0.1:{web_port}", url, SandboxAdmin(sandbox_url))
    stack.log_path = web.log_path
    yield stack
    for child in reversed(children):
        child.stop()


@pytest.fixture
def web(web_stack: Web) -> Web:
    web_stack.sandbox.reset(
        processing_seconds=0.5, webhook_url=web_stack.url + "/webhooks/mce", webhook_secret=SECRET
    )
    return web_stack


def intent(ref: str) -> dict[str, Any]:
    return {
        "originalTransactionType": 1,
        "originalTransactionId": f"tx-{ref}",
        "clientReference": ref,
    }


def test_intake_status_codes_and_idempotency(web: Web, prefix: str) -> None:
    ref = prefix + "a"
    assert web.http.post(web.url + "/refunds", json=intent(ref), timeout=5).status_code == 401
    bad_key = {"X-API-Key": "nope"}
    assert (
        web.http.post(
            web.url + "/refunds", json=intent(ref), headers=bad_key, timeout=5
        ).status_code
        == 401
    )
    first = web.submit(intent(ref))
    assert first.status_code == 201 and first.json()["state"] == "received"
    again = web.submit(intent(ref))
    assert again.status_code == 200 and again.json()["createdAt"] == first.json()["createdAt"]
    conflict = web.submit({**intent(ref), "originalTransactionId": "other"})
    assert conflict.status_code == 409
    assert conflict.json()["errors"][0]["field"] == "originalTransactionId"
    invalid = web.submit({"originalTransactionType": 7, "clientReference": "bad ref"})
    assert invalid.status_code == 422
    fields = {e["field"] for e in invalid.json()["errors"]}
    assert fields == {"originalTransactionType", "originalTransactionId", "clientReference"}
    assert web.ledger.find("bad ref") is None
    got = web.http.get(f"{web.url}/refunds/{ref}", headers=KEY, timeout=5)
    assert got.status_code == 200 and got.json()["clientReference"] == ref
    assert (
        web.http.get(f"{web.url}/refunds/{prefix}none", headers=KEY, timeout=5).status_code == 404
    )


def test_list_is_paged_and_filtered(web: Web, prefix: str) -> None:
    for i in range(5):
        web.submit(intent(f"{prefix}{i}"))
    seen: list[str] = []
    cursor: int | None = 0
    while cursor is not None:
        page = web.http.get(
            web.url + "/refunds", params={"limit": 50, "cursor": cursor}, headers=KEY, timeout=5
        ).json()
        seen += [r["clientReference"] for r in page["items"]]
        cursor = page["next"]
    assert {f"{prefix}{i}" for i in range(5)} <= set(seen)
    assert len(seen) == len(set(seen))
    bad = web.http.get(web.url + "/refunds", params={"state": "nonsense"}, headers=KEY, timeout=5)
    assert bad.status_code == 422


def test_webhooks_make_refunds_final_with_few_gets(web: Web, prefix: str) -> None:
    # WEBHOOK_REFUNDS=300 for a benchmark-sized sample of the latency below.
    refs = [f"{prefix}{i}" for i in range(int(os.environ.get("WEBHOOK_REFUNDS", "20")))]
    web.sandbox.flag([f"tx-{r}" for r in refs])
    for ref in refs:
        assert web.submit(intent(ref)).status_code == 201
    records = wait_final(web.ledger, refs, 60 + len(refs) / 5)
    assert {r.state for r in records} == {State.COMPLETED}
    counters = web.sandbox.counters(prefix)
    gets = counters["calls"]["get"]
    print(f"\nwebhooks on: {gets / len(refs):.2f} Gets per refund")
    assert gets / len(refs) <= 1.0
    # Webhook-to-final latency: from the moment the sandbox started POSTing the final webhook
    # to the record's final history entry (one clock: both processes run on this machine).
    deliveries = requests.get(
        web.sandbox.url + "/sandbox/webhooks", params={"prefix": prefix}, timeout=5
    ).json()["deliveries"]
    final_sent = {
        d["clientReference"]: d["sent_at"]
        for d in deliveries
        if d["status"] == 3 and d["outcome"] == "delivered"
    }
    lags = sorted(
        r.history[-1].at - final_sent[r.client_reference]
        for r in records
        if r.client_reference in final_sent and r.history[-1].actor == "mce-webhook"
    )
    assert len(lags) >= len(refs) * 0.8  # webhooks, not polls, finished most refunds
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    print(
        f"webhook-to-final: p50 {statistics.median(lags) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms (n={len(lags)})"
    )


def test_dropped_webhooks_are_caught_by_polling(web: Web, prefix: str) -> None:
    web.sandbox.configure(webhook_drop_rate=1.0)
    refs = [f"{prefix}{i}" for i in range(5)]
    web.sandbox.flag([f"tx-{r}" for r in refs])
    for ref in refs:
        web.submit(intent(ref))
    records = wait_final(web.ledger, refs, 60)
    assert {r.state for r in records} == {State.COMPLETED}
    assert all(r.history[-1].actor == "pipeline" for r in records)  # the poller finished them
    gets = web.sandbox.counters(prefix)["calls"]["get"]
    print(f"\nwebhooks dropped: {gets / len(refs):.2f} Gets per refund")


def _event(ref: str, status: int, nid: str, **data: Any) -> dict[str, Any]:
    return {
        "eventType": "crypto.refund.updated",
        "notificationId": nid,
        "data": {
            "cryptoRefundId": "CR" + ref[-6:].upper(),
            "clientReference": ref,
            "status": status,
            **data,
        },
    }


def test_duplicate_reordered_and_replayed_webhooks_change_nothing_after_the_first(
    web: Web, prefix: str
) -> None:
    ref = prefix + "d"
    web.sandbox.configure(webhook_url=None)  # we play MCE by hand here
    web.sandbox.flag([f"tx-{ref}"])
    web.submit(intent(ref))
    wait_until(lambda: web.ledger.get(ref).state == State.PROCESSING, 30, "processing")
    rid = web.ledger.get(ref).crypto_refund_id
    final = {
        "eventType": "crypto.refund.updated",
        "notificationId": prefix + "n3",
        "data": {"cryptoRefundId": rid, "clientReference": ref, "status": 3, "txnHash": "0xfeed"},
    }
    first = web.hook(final)
    assert first.status_code == 200 and first.json()["state"] == "completed"
    done = web.ledger.get(ref)
    assert done.txn_hash == "0xfeed" and web.ledger.due_at(ref) is None  # poll timer cancelled
    assert web.hook(final).json()["outcome"] == "duplicate"  # same notificationId
    older = {**final, "notificationId": prefix + "n2", "data": {**final["data"], "status": 2}}
    assert web.hook(older).json()["outcome"] == "stale"  # reordered: an older update
    failed = {**final, "notificationId": prefix + "n4", "data": {**final["data"], "status": 4}}
    answer = web.hook(failed).json()
    assert (answer["state"], answer["outcome"]) == ("completed", "contradiction")  # final is sticky
    after = web.ledger.get(ref)
    assert after.version == done.version + 1 and after.state == State.COMPLETED
    assert after.txn_hash == "0xfeed"
    assert after.conflict is not None
    assert after.conflict["kind"] == "failed_after_completed"
    assert after.conflict["providerStatus"] == 4
    assert after.conflict["source"] == "webhook"
    assert ref in web.ledger.conflicted()
    listed = web.http.get(
        web.url + "/refunds", params={"conflicts": "true", "limit": 500}, headers=KEY, timeout=5
    ).json()
    assert ref in [r["clientReference"] for r in listed["items"]]
    assert all(r["conflict"] is not None for r in listed["items"])


def test_forged_stale_malformed_and_oversized_webhooks_touch_nothing(web: Web, prefix: str) -> None:
    ref = prefix + "f"
    web.sandbox.configure(webhook_url=None)
    web.sandbox.flag([f"tx-{ref}"])
    web.submit(intent(ref))
    wait_until(lambda: web.ledger.get(ref).state == State.PROCESSING, 30, "processing")
    before = web.ledger.get(ref)
    event = _event(ref, 3, prefix + "x", txnHash="0xbad")
    assert web.hook(event, secret="wrong-secret").status_code == 401
    assert web.hook(event, sig="0" * 64).status_code == 401
    assert web.hook(event, ts_ms=(int(time.time()) - 3600) * 1000).status_code == 400
    assert web.hook(event, ts_ms=int(time.time())).status_code == 400  # seconds, not ms
    body = json.dumps(event).encode()
    for bad_t in ("NaN", "1_796_030_000", "+1796030000", "1.79603e9"):
        mac = hmac.new(SECRET.encode(), f"{bad_t}.".encode() + body, hashlib.sha256).hexdigest()
        answer = web.http.post(
            web.url + "/webhooks/mce",
            data=body,
            headers={"X-Signature": f"t={bad_t},v0={mac}"},
            timeout=5,
        )
        assert answer.status_code == 400, bad_t
    legacy_t = str(int(time.time()))
    legacy = web.http.post(
        web.url + "/webhooks/mce",
        data=body,
        headers={
            "X-MCE-Timestamp": legacy_t,
            "X-MCE-Signature": hmac.new(
                SECRET.encode(), f"{legacy_t}.".encode() + body, hashlib.sha256
            ).hexdigest(),
        },
        timeout=5,
    )
    assert legacy.status_code == 401  # the invented headers are gone
    assert web.hook(b"{not json").status_code == 400
    assert web.hook({"eventType": "crypto.refund.updated"}).status_code == 400
    big = {**event, "padding": "x" * 200_000}
    assert web.hook(big).status_code == 413
    unsigned = web.http.post(web.url + "/webhooks/mce", json=event, timeout=5)
    assert unsigned.status_code == 401
    after = web.ledger.get(ref)
    assert after.version == before.version and after.txn_hash is None
    assert not web.ledger.redis.exists(event_key(f"{prefix}x"))  # nothing stored either


def _provider_create(web: Web, ref: str) -> str:
    """Create the refund at the sandbox directly (as if MCE had it before our Create): its id."""
    token = requests.post(
        web.sandbox.url + "/v1.0/oauth/token",
        data={"client_id": "sandbox-client-id", "client_secret": "sandbox-client-secret"},
        timeout=5,
    ).json()["access_token"]
    answer = requests.post(
        web.sandbox.url + "/v1.0/payment/crypto/createCryptoRefund",
        json={
            "originalTransactionType": 1,
            "originalTransactionId": f"tx-{ref}",
            "clientReference": ref,
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"]["cryptoRefundId"])


def test_webhook_for_an_unknown_refund_is_kept_and_applied_when_it_appears(
    web: Web, prefix: str
) -> None:
    ref = prefix + "early"
    web.sandbox.configure(webhook_url=None)
    web.sandbox.flag([f"tx-{ref}"])
    rid = _provider_create(web, ref)
    early = web.hook(
        {
            "eventType": "crypto.refund.updated",
            "notificationId": prefix + "e1",
            "data": {
                "cryptoRefundId": rid,
                "clientReference": ref,
                "status": 3,
                "txnHash": "0xearly",
            },
        }
    )
    assert early.status_code == 202 and early.json()["outcome"] == "parked"
    web.submit(intent(ref))
    (record,) = wait_final(web.ledger, [ref], 30)
    assert (record.state, record.crypto_refund_id, record.txn_hash) == (
        State.COMPLETED,
        rid,
        "0xearly",  # the parked webhook finished it, not a poll
    )
    assert web.ledger.redis.hget(event_key(f"{prefix}e1"), "status") == "applied"


def _processing(web: Web, ref: str) -> str:
    web.sandbox.flag([f"tx-{ref}"])
    web.submit(intent(ref))
    wait_until(lambda: web.ledger.get(ref).state == State.PROCESSING, 30, "processing")
    return str(web.ledger.get(ref).crypto_refund_id)


def test_concurrent_copies_of_one_delivery_are_one_applied_and_the_rest_duplicate(
    web: Web, prefix: str
) -> None:
    web.sandbox.configure(webhook_url=None)
    for burst in range(3):
        ref = f"{prefix}c{burst}"
        rid = _processing(web, ref)
        body = json.dumps(
            _event(ref, 3, f"{prefix}burst{burst}", cryptoRefundId=rid, txnHash="0xc")
        ).encode()
        header = signed(body)  # one delivery: the very same bytes and header, ten times at once
        start = threading.Barrier(10)

        def post(
            body: bytes = body, header: str = header, start: threading.Barrier = start
        ) -> requests.Response:
            start.wait()
            return requests.post(
                web.url + "/webhooks/mce", data=body, headers={"X-Signature": header}, timeout=10
            )

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: post(), range(10)))
        assert [a.status_code for a in answers] == [200] * 10
        outcomes = Counter(a.json()["outcome"] for a in answers)
        assert outcomes == {"applied": 1, "duplicate": 9}, (burst, outcomes)
        record = web.ledger.get(ref)
        assert record.state == State.COMPLETED
        assert sum(1 for h in record.history if h.to_state == "completed") == 1


def test_same_notification_id_with_another_body_is_a_conflict_and_changes_nothing(
    web: Web, prefix: str
) -> None:
    web.sandbox.configure(webhook_url=None)
    ref = prefix + "cf"
    rid = _processing(web, ref)
    before_count = int(web.ledger.redis.hget(WEBHOOKS, "conflict") or 0)
    first = _event(ref, 2, prefix + "same", cryptoRefundId=rid)
    assert web.hook(first).json()["outcome"] in ("applied", "stale")
    before = web.ledger.get(ref)
    other = _event(ref, 3, prefix + "same", cryptoRefundId=rid, txnHash="0xother")
    answer = web.hook(other)
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "conflict"
    after = web.ledger.get(ref)
    assert (after.version, after.state, after.txn_hash) == (before.version, before.state, None)
    assert int(web.ledger.redis.hget(WEBHOOKS, "conflict") or 0) == before_count + 1
    assert web.ledger.redis.hget(event_key(f"{prefix}same"), "conflicts") == "1"
    log = web.log_path.read_text(errors="replace")
    [line] = [json.loads(x) for x in log.splitlines() if "webhook conflict" in x and prefix in x]
    assert line["level"] == "warning"


def test_v2_event_with_code_msg_number_amounts_and_status_info_is_applied(
    web: Web, prefix: str
) -> None:
    web.sandbox.configure(webhook_url=None)
    ref = prefix + "v2"
    rid = _processing(web, ref)
    body = (
        b'{"code":200,"msg":"success","eventType":"crypto.refund.updated.v2",'
        + f'"notificationId":"{prefix}v2n","data":{{"cryptoRefundId":"{rid}",'.encode()
        + f'"clientReference":"{ref}","status":3,"statusInfo":"COMPLETED",'.encode()
        + b'"amount":10.000000000000000001,"feeAmount":0.00000021,"txnHash":"0xv2"}}'
    )
    answer = web.hook(body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "applied"
    record = web.ledger.get(ref)
    assert (record.state, record.status_info, record.txn_hash) == (
        State.COMPLETED,
        "COMPLETED",
        "0xv2",
    )
    assert record.amount == Decimal("10.000000000000000001")
    public = web.http.get(web.url + f"/refunds/{ref}", headers=KEY, timeout=5).json()
    assert public["statusInfo"] == "COMPLETED"


def test_other_event_families_are_stored_and_not_applied(web: Web, prefix: str) -> None:
    web.sandbox.configure(webhook_url=None)
    ref = prefix + "dep"
    _processing(web, ref)
    before = web.ledger.get(ref)
    deposit = {
        "eventType": "crypto.deposit.updated.v2",
        "notificationId": prefix + "dep1",
        "data": {"depositId": "D1", "clientReference": ref, "status": 3, "amount": 5},
    }
    answer = web.hook(deposit)
    assert (answer.status_code, answer.json()["outcome"]) == (200, "ignored")
    stored = web.ledger.redis.hgetall(event_key(f"{prefix}dep1"))
    assert stored["status"] == "ignored" and json.loads(stored["body"]) == deposit
    assert web.ledger.get(ref).version == before.version


def test_a_webhook_naming_another_refund_id_is_not_adopted(web: Web, prefix: str) -> None:
    web.sandbox.configure(webhook_url=None)
    ref = prefix + "oid"
    rid = _processing(web, ref)
    before = web.ledger.get(ref)
    answer = web.hook(_event(ref, 3, prefix + "oid1", cryptoRefundId="CRXOTHER", txnHash="0xo"))
    assert answer.json()["outcome"] == "mismatch"
    # Stopped for a human with both ids (issue 10, case 3); the other id and hash never adopted.
    after = web.ledger.get(ref)
    assert (after.state, after.crypto_refund_id, after.txn_hash) == (
        State.NEEDS_ATTENTION,
        rid,
        None,
    )
    assert after.version == before.version + 1
    assert after.last_error is not None
    assert (after.last_error["code"], after.last_error["ours"], after.last_error["theirs"]) == (
        "PROVIDER_MISMATCH",
        rid,
        "CRXOTHER",
    )


def test_healthz_metrics_and_openapi(web: Web) -> None:
    assert web.http.get(web.url + "/healthz", timeout=5).json() == {"ok": True}
    metrics = web.http.get(web.url + "/metrics", timeout=5).text
    for name in (
        "refunds_by_state",
        "refunds_provider_calls_total",
        "refunds_provider_latency_seconds_bucket",
        "refunds_webhooks_total",
        "refunds_timer_lag_seconds",
    ):
        assert name in metrics, name
    spec = web.http.get(web.url + "/openapi.json", timeout=5).json()
    assert "/webhooks/mce" in spec["paths"] and "/refunds" in spec["paths"]


def test_operator_actions_over_http(web: Web, prefix: str) -> None:
    ref = prefix + "op"
    web.sandbox.configure(webhook_url=None)
    web.submit(intent(ref))  # payment never flagged: needs attention
    (record,) = wait_final(web.ledger, [ref], 30)
    assert record.state == State.NEEDS_ATTENTION
    url = f"{web.url}/refunds/{ref}"
    assert (
        web.http.post(
            url + "/approve", json={"by": "ann", "reason": "x"}, headers=OPERATOR_KEY, timeout=5
        ).status_code
        == 409
    )
    assert (
        web.http.post(
            url + "/retry", json={"by": "ann"}, headers=OPERATOR_KEY, timeout=5
        ).status_code
        == 422
    )
    web.sandbox.flag([f"tx-{ref}"])
    retried = web.http.post(
        url + "/retry",
        json={"by": "ann", "reason": "payment flagged now"},
        headers=OPERATOR_KEY,
        timeout=5,
    )
    assert retried.status_code == 200, retried.text
    (record,) = wait_final(web.ledger, [ref], 30)
    assert record.state == State.COMPLETED
    entry = next(h for h in record.history if h.actor == "ann")
    assert entry.reason.startswith("retried: payment flagged now; previous error: {")
    cancel = web.http.post(
        url + "/cancel", json={"by": "ann", "reason": "late"}, headers=OPERATOR_KEY, timeout=5
    )
    assert cancel.status_code == 409 and "already final" in cancel.json()["detail"]


# --- fuzzing the API from its own OpenAPI description -------------------------------------------


def test_api_fuzzed_from_its_openapi_never_5xx_and_matches_schema(web: Web) -> None:
    """Schemathesis drives every operation with generated requests (valid and invalid)."""
    schema = schemathesis.openapi.from_url(web.url + "/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    # Operator routes are fuzzed with the operator key, so their bodies and answers are exercised
    # (with the intake key they would only ever answer 403).
    operator = [op for op in operations if _is_operator_route(op.path)]
    assert {op.path for op in operator} >= {
        "/operator/retry",
        "/refunds/retry",
        "/refunds/{client_reference}/approve",
        "/refunds/{client_reference}/retry",
        "/refunds/{client_reference}/cancel",
    }
    for operation in operations:
        _fuzz(operation, OPERATOR_KEY if operation in operator else KEY, checks)


def _fuzz(operation: Any, headers: dict[str, str], checks: list[Any]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=checks, timeout=10)

    fuzz()


def _is_operator_route(path: str) -> bool:
    return path.startswith("/operator/") or path == "/refunds/retry" or path.endswith(
        ("/approve", "/retry", "/cancel")
    )


def test_a_contradiction_is_acknowledged_over_http(web: Web, prefix: str) -> None:
    """A refund cancelled before MCE made it, then a webhook saying MCE completed it: marked
    and listed; ``POST /refunds/REF/conflict/ack`` acknowledges it, once."""
    ref = prefix + "contra"
    web.sandbox.configure(webhook_url=None)
    web.submit(intent(ref))  # payment never flagged: needs attention
    wait_final(web.ledger, [ref], 30)
    url = f"{web.url}/refunds/{ref}"
    cancelled = web.http.post(
        url + "/cancel", json={"reason": "withdrawn"}, headers=OPERATOR_KEY, timeout=10
    )
    assert cancelled.status_code == 200, cancelled.text
    news = {"cryptoRefundId": "CR-" + ref, "clientReference": ref, "status": 3, "txnHash": "0x1"}
    event = {"notificationId": f"n-{ref}", "eventType": "crypto.refund.updated", "data": news}
    assert web.hook(event).status_code == 200
    assert ref in web.ledger.conflicted()
    ack = {"reason": "refunded by MCE after our cancel; merchant called"}
    answer = web.http.post(url + "/conflict/ack", json=ack, headers=OPERATOR_KEY, timeout=10)
    assert answer.status_code == 200, answer.text
    assert ref not in web.ledger.conflicted()
    mark = web.ledger.get(ref).conflict
    assert mark is not None and mark["acknowledgedReason"] == ack["reason"]
    again = web.http.post(url + "/conflict/ack", json=ack, headers=OPERATOR_KEY, timeout=10)
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
