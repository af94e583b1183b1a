"""HTTP intake as real clients send it: body limits, the JSON Content-Type policy, Redis down,
and money in plain decimal notation. A real uvicorn (``refunds web``) on a private Redis; no worker
is needed (records stay where the test puts them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.localstack import Child, free_port, start_redis, start_web, wait_until
from refunds.models import State
from refunds.store.ledger import Ledger
from sandbox.webhooks import SIGNATURE_HEADER, signature_header

KEY = "test-api-key-9c1e"
# Operator routes need an operator key (the sandbox profile's published one), not the intake key.
OPERATOR_JSON = {"X-API-Key": "sandbox-operator-key", "Content-Type": "application/json"}
SECRET = "whsec-test-intake-5b8f"
LIMIT = 64 * 1024


def _env(redis_url: str) -> dict[str, str]:
    return {
        "REFUNDS_PROFILE": "sandbox",
        "REDIS_URL": redis_url,
        "REFUNDS_API_KEY": KEY,
        "MCE_WEBHOOK_SECRET": SECRET,
        "REFUNDS_LOG_JSON": "true",
    }


class Api:
    def __init__(self, url: str, ledger: Ledger, redis_child: Child) -> None:
        self.url = url
        self.ledger = ledger
        self.redis_child = redis_child
        self.http = requests.Session()

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        return self.http.post(
            self.url + path, data=body, headers={"X-API-Key": KEY, **(headers or {})}, timeout=10
        )


def _start(workdir: Path) -> tuple[Api, list[Child]]:
    redis_child, redis_url = start_redis(workdir / "redis", appendonly=False)
    port = free_port()
    web = start_web(workdir / "logs", _env(redis_url), port=port)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url + "/healthz", timeout=1).ok, 30, "web", web)
    return Api(url, Ledger.from_url(redis_url), redis_child), [web, redis_child]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    started, children = _start(tmp_path_factory.mktemp("web-intake"))
    yield started
    for child in children:
        child.stop()


def intent(ref: str) -> dict[str, Any]:
    return {
        "originalTransactionType": 1,
        "originalTransactionId": f"tx-{ref}",
        "clientReference": ref,
    }


def body_of(ref: str) -> bytes:
    return json.dumps(intent(ref)).encode()


JSON = {"Content-Type": "application/json"}


# --- body limit -----------------------------------------------------------------------------------


def test_a_2_mb_body_to_post_refunds_is_413_and_writes_nothing(api: Api, prefix: str) -> None:
    ref = prefix + "big"
    big = json.dumps({**intent(ref), "refundAddress": "x" * 2_000_000}).encode()
    answer = api.post("/refunds", big, JSON)
    assert answer.status_code == 413
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"detail": f"body larger than {LIMIT} bytes", "errors": []}
    assert api.ledger.find(ref) is None


def test_a_streamed_body_without_content_length_is_stopped_at_the_limit(
    api: Api, prefix: str
) -> None:
    ref = prefix + "chunked"
    big = json.dumps({**intent(ref), "refundAddress": "x" * (LIMIT * 3)}).encode()

    def chunks() -> Iterator[bytes]:  # a generator: requests sends it chunked, no Content-Length
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    answer = api.http.post(
        api.url + "/refunds", data=chunks(), headers={"X-API-Key": KEY, **JSON}, timeout=10
    )
    assert answer.status_code == 413
    assert answer.json()["detail"] == f"body larger than {LIMIT} bytes"
    assert api.ledger.find(ref) is None


def test_a_body_just_under_the_limit_is_read_and_judged_on_its_content(
    api: Api, prefix: str
) -> None:
    ref = prefix + "fits"
    padded = json.dumps({**intent(ref), "refundAddress": "x" * (LIMIT - 200)}).encode()
    assert len(padded) <= LIMIT
    answer = api.post("/refunds", padded, JSON)
    assert answer.status_code == 422  # read whole, then refused for its 256-char address limit
    assert answer.json()["errors"][0]["field"] == "refundAddress"


def test_operator_and_webhook_routes_have_the_same_limit(api: Api, prefix: str) -> None:
    big = json.dumps({"by": "ann", "reason": "x" * (LIMIT + 1)}).encode()
    assert api.post(f"/refunds/{prefix}x/retry", big, OPERATOR_JSON).status_code == 413
    hook = api.http.post(
        api.url + "/webhooks/mce", data=b"{" + b" " * (LIMIT + 1) + b"}", headers=JSON, timeout=10
    )
    assert hook.status_code == 413


# --- Content-Type policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("text/plain", 415),
        ("text/plain; charset=utf-8", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=xyz", 415),
        ("application/json", 201),
        ("application/json; charset=utf-8", 201),
        ("application/merge-patch+json", 201),
    ],
)
def test_json_bodies_need_a_json_content_type(
    api: Api, prefix: str, content_type: str | None, status: int
) -> None:
    ref = prefix + "ct"
    headers = {"X-API-Key": KEY}
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = requests.Request("POST", api.url + "/refunds", data=body_of(ref), headers=headers)
    prepared = api.http.prepare_request(request)
    if content_type is None:
        prepared.headers.pop("Content-Type", None)
    answer = api.http.send(prepared, timeout=10)
    assert answer.status_code == status, answer.text
    if status == 415:
        assert answer.json()["detail"].startswith("Content-Type must be application/json")
        assert api.ledger.find(ref) is None
    else:
        assert answer.json()["clientReference"] == ref


def test_operator_actions_need_a_json_content_type_too(api: Api, prefix: str) -> None:
    body = json.dumps({"by": "ann", "reason": "why"}).encode()
    answer = api.post(
        f"/refunds/{prefix}x/cancel",
        body,
        {"X-API-Key": "sandbox-operator-key", "Content-Type": "text/plain"},
    )
    assert answer.status_code == 415
    assert api.post(f"/refunds/{prefix}x/cancel", body, OPERATOR_JSON).status_code == 404


# --- money leaves in plain decimal notation ------------------------------------------------------


def test_a_fee_of_0_00000021_is_shown_as_such_by_the_api(api: Api, prefix: str) -> None:
    ref = prefix + "fee"
    assert api.post("/refunds", body_of(ref), JSON).status_code == 201
    record = api.ledger.get(ref)
    api.ledger.transition(
        record,
        State.CREATING,
        "test: fee",
        fields={"fee_amount": Decimal("0.00000021"), "amount": Decimal("1E+3")},
    )
    got = api.http.get(f"{api.url}/refunds/{ref}", headers={"X-API-Key": KEY}, timeout=5)
    assert '"feeAmount":"0.00000021"' in got.text.replace(" ", "")
    assert got.json()["feeAmount"] == "0.00000021"
    assert got.json()["amount"] == "1000"
    listed = api.http.get(
        f"{api.url}/refunds", params={"state": "creating"}, headers={"X-API-Key": KEY}, timeout=5
    ).json()
    assert {r["clientReference"]: r["feeAmount"] for r in listed["items"]}[ref] == "0.00000021"


# --- Redis unavailable --------------------------------------------------------------------------


def test_every_route_answers_503_with_retry_after_while_redis_is_down(
    tmp_path: Path, prefix: str
) -> None:
    down, children = _start(tmp_path)
    try:
        ref = prefix + "down"
        assert down.post("/refunds", body_of(ref), JSON).status_code == 201
        down.redis_child.stop()
        key = {"X-API-Key": KEY}
        action = json.dumps({"by": "ann", "reason": "why"}).encode()
        answers = {
            "POST /refunds": down.post("/refunds", body_of(prefix + "new"), JSON),
            "GET /refunds/ref": down.http.get(f"{down.url}/refunds/{ref}", headers=key, timeout=10),
            "GET /refunds": down.http.get(f"{down.url}/refunds", headers=key, timeout=10),
            "POST approve": down.post(f"/refunds/{ref}/approve", action, OPERATOR_JSON),
            "POST retry": down.post(f"/refunds/{ref}/retry", action, OPERATOR_JSON),
            "POST cancel": down.post(f"/refunds/{ref}/cancel", action, OPERATOR_JSON),
            "GET /healthz": down.http.get(down.url + "/healthz", timeout=10),
            "GET /metrics": down.http.get(down.url + "/metrics", timeout=10),
        }
        for route, answer in answers.items():
            assert answer.status_code == 503, (route, answer.status_code, answer.text)
            assert answer.headers["Retry-After"] == "5", route
            assert answer.headers["content-type"].startswith("application/json"), route
            detail = answer.json()["detail"]
            assert "retry later" in detail or detail.startswith("redis:"), (route, detail)
            assert "127.0.0.1" not in detail, route  # no topology in the answer
    finally:
        for child in children:
            child.stop()


def test_the_webhook_route_answers_503_while_redis_is_down(tmp_path: Path) -> None:
    down, children = _start(tmp_path)
    try:
        down.redis_child.stop()
        event = {
            "eventType": "crypto.refund.updated",
            "notificationId": "n-down",
            "data": {"cryptoRefundId": "CR1", "clientReference": "r-down", "status": 3},
        }
        body = json.dumps(event).encode()
        # Signed as the sandbox signs (so as MCE does): the route gets past verification.
        signed = {SIGNATURE_HEADER: signature_header(SECRET, body)}
        answer = down.http.post(
            down.url + "/webhooks/mce", data=body, timeout=10, headers={**JSON, **signed}
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
    finally:
        for child in children:
            child.stop()


def test_http_intake_refuses_a_key_given_twice_and_a_scientific_notation_id(
    api: Api, prefix: str
) -> None:
    """The same rules as a batch file: a JSON object that says two things, or an id a spreadsheet
    rounded, is refused with the field named, and nothing is written."""
    ref = prefix + "dup"
    twice = (
        '{"originalTransactionType": 1, "originalTransactionId": "tx-1", '
        f'"clientReference": "{ref}-a", "clientReference": "{ref}-b"}}'
    ).encode()
    answer = api.post("/refunds", twice, JSON)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == [{"field": "clientReference", "message": "appears twice"}]
    rounded = json.dumps(
        {
            "originalTransactionType": 1,
            "originalTransactionId": "9.91214E+15",
            "clientReference": ref,
        }
    ).encode()
    answer = api.post("/refunds", rounded, JSON)
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["field"] == "originalTransactionId"
    assert "scientific notation" in error["message"]
    assert api.ledger.find(ref) is None
    assert api.ledger.find(ref + "-a") is None and api.ledger.find(ref + "-b") is None
