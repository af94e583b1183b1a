"""The MCE simulator over real HTTP: contract shapes, state, idempotency, faults and the admin API.

One in-process server (port 0) serves the whole module; each test resets it through the admin API,
so tests are independent, and each uses its own clientReference prefix.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from sandbox import SandboxConfig, make_server
from sandbox.server import SandboxServer

CLIENT_ID = "it-client"
CLIENT_SECRET = "it-secret"
TIMEOUT = (2.0, 5.0)

TOKEN = "/v1.0/oauth/token"
CREATE = "/v1.0/payment/crypto/createCryptoRefund"
CONFIRM = "/v1.0/payment/crypto/confirmCryptoRefund"
GET = "/v1.0/payment/crypto/getCryptoRefund"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    srv = make_server("127.0.0.1", 0, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, seed=1)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


class Sandbox:
    """A tiny test client: provider calls with a token, plus the admin API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.token = ""

    def url(self, path: str) -> str:
        return self.base + path

    def admin(self, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
        return self.http.request(
            method, self.url("/sandbox" + path), json=body, params=params, timeout=TIMEOUT
        )

    def configure(self, **fields: Any) -> dict[str, Any]:
        response = self.admin("POST", "/config", fields)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def flag(self, *tx_ids: str, **fields: Any) -> None:
        payments = [
            {"originalTransactionType": 1, "originalTransactionId": t, **fields} for t in tx_ids
        ]
        response = self.admin("POST", "/payments", {"payments": payments})
        assert response.json() == {"flagged": len(tx_ids)}

    def counters(self, prefix: str = "") -> dict[str, Any]:
        return dict(self.admin("GET", "/counters", prefix=prefix).json())

    def issue_token(self) -> str:
        response = self.http.post(
            self.url(TOKEN),
            data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        return self.token

    def headers(self, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def create(
        self, tx_id: str, reference: str, key: str | None = None, tx_type: int = 1
    ) -> requests.Response:
        body = {
            "originalTransactionType": tx_type,
            "originalTransactionId": tx_id,
            "clientReference": reference,
        }
        return self.http.post(
            self.url(CREATE), json=body, headers=self.headers(key), timeout=TIMEOUT
        )

    def confirm(
        self, refund_id: str, address: str | None = "TXaddr", key: str | None = None
    ) -> requests.Response:
        body = {"cryptoRefundId": refund_id}
        if address is not None:
            body["refundAddress"] = address
        return self.http.post(
            self.url(CONFIRM), json=body, headers=self.headers(key), timeout=TIMEOUT
        )

    def get(self, **params: str) -> requests.Response:
        return self.http.get(self.url(GET), params=params, headers=self.headers(), timeout=TIMEOUT)

    def created_refund(self, tx_id: str, reference: str) -> dict[str, Any]:
        self.flag(tx_id)
        response = self.create(tx_id, reference)
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def statuses_until_final(self, refund_id: str, deadline_s: float = 5.0) -> list[int]:
        """Poll Get and return the distinct statuses seen, in order, until a final one."""
        seen: list[int] = []
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            status = self.get(cryptoRefundId=refund_id).json()["data"]["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in (3, 4, 5):
                return seen
            time.sleep(0.02)
        raise AssertionError(f"refund {refund_id} did not finish; saw {seen}")


@pytest.fixture
def sb(server: SandboxServer) -> Iterator[Sandbox]:
    host, port = server.server_address[:2]
    client = Sandbox(f"http://{host!s}:{port}")
    assert client.admin("POST", "/reset").status_code == 200
    client.issue_token()
    yield client
    client.http.close()


def ref(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assert_problem(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = dict(response.json())
    assert body["code"] == code
    assert body["status"] == status
    assert body["instance"] == urlsplit(str(response.request.url)).path
    assert {"type", "title", "detail"} <= body.keys()
    assert len(body["logId"]) == 16
    return body


# --- token -----------------------------------------------------------------------------------


def test_token_is_issued_for_valid_credentials_with_ttl_from_config(sb: Sandbox) -> None:
    response = sb.http.post(
        sb.url(TOKEN),
        data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    )
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert len(body["access_token"]) >= 32
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert isinstance(body["expires_in"], int)


def test_token_with_wrong_secret_is_refused_as_invalid_client(sb: Sandbox) -> None:
    response = sb.http.post(
        sb.url(TOKEN), data={"client_id": CLIENT_ID, "client_secret": "nope"}, timeout=TIMEOUT
    )
    assert_problem(response, 401, "AUTH_INVALID_CLIENT")


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"client_id=x", FORM),
        (b"client_id=&client_secret=", FORM),
        (b"\xff=1", FORM),
        (b"client_id=it-client&client_secret=it-secret", {"Content-Type": "text/plain"}),
        (b"client_id=it-client&client_secret=it-secret", {}),
        (b"not json", JSON),
        (b"[]", JSON),
        (b'{"client_id": 1, "client_secret": "x"}', JSON),
    ],
)
def test_malformed_token_request_is_invalid_request(
    sb: Sandbox, body: bytes, headers: dict[str, str]
) -> None:
    response = sb.http.post(sb.url(TOKEN), data=body, headers=headers, timeout=TIMEOUT)
    assert_problem(response, 400, "INVALID_REQUEST")


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("oauth", {"access_token", "token_type", "expires_in"}),
        ("no_lifetime", {"access_token", "token_type"}),
    ],
)
def test_token_answer_top_level_shapes(sb: Sandbox, shape: str, expected: set[str]) -> None:
    sb.configure(token_shape=shape, token_ttl_seconds=7)
    body = sb.http.post(
        sb.url(TOKEN),
        data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    ).json()
    assert set(body) == expected
    assert body.get("expires_in", 7) == 7


@pytest.mark.parametrize(
    ("shape", "code", "fields"),
    [
        ("envelope", 200, {"accessToken", "expiresIn"}),
        ("envelope_snake", 200, {"access_token", "expires_in", "token_type"}),
    ],
)
def test_token_answer_envelope_shapes(sb: Sandbox, shape: str, code: int, fields: set[str]) -> None:
    sb.configure(token_shape=shape)
    body = sb.http.post(
        sb.url(TOKEN),
        data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    ).json()
    assert (body["code"], body["msg"], set(body["data"])) == (code, "success", fields)


def test_token_as_json_with_the_same_fields_is_accepted_and_v2_prefix_is_served(
    sb: Sandbox,
) -> None:
    response = sb.http.post(
        sb.url("/v2.0/oauth/token"),
        json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    sb.token = response.json()["access_token"]
    sb.flag("tx-v2")
    created = sb.http.post(
        sb.url("/v2.0/payment/crypto/createCryptoRefund"),
        json={
            "originalTransactionType": 1,
            "originalTransactionId": "tx-v2",
            "clientReference": "v2-1",
            "participantCode": "P-77",
        },
        headers=sb.headers(),
        timeout=TIMEOUT,
    ).json()["data"]
    assert created["participantCode"] == "P-77"
    got = sb.get(clientReference="v2-1").json()["data"]
    assert got["cryptoRefundId"] == created["cryptoRefundId"]
    recorded = sb.admin("GET", "/requests", operation="token").json()["requests"]["token"]
    assert recorded[-1]["body"] == {"client_id": CLIENT_ID, "client_secret": "***"}


def test_expired_token_is_refused_as_expired(sb: Sandbox) -> None:
    sb.configure(token_ttl_seconds=0.3)
    sb.issue_token()
    token_body = sb.http.post(
        sb.url(TOKEN),
        data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    ).json()
    assert token_body["expires_in"] == 0.3
    assert_problem(sb.get(clientReference="missing"), 404, "CRYPTO_REFUND_NOT_FOUND")
    time.sleep(0.4)
    assert_problem(sb.get(clientReference="missing"), 401, "AUTH_TOKEN_EXPIRED")


def test_revoked_missing_and_unknown_tokens_are_refused_as_invalid(sb: Sandbox) -> None:
    assert sb.admin("POST", "/revoke-tokens").json() == {"revoked": 1}
    assert_problem(sb.get(clientReference="x"), 401, "AUTH_TOKEN_INVALID")
    sb.token = "made-up"
    assert_problem(sb.get(clientReference="x"), 401, "AUTH_TOKEN_INVALID")
    response = sb.http.get(sb.url(GET), params={"clientReference": "x"}, timeout=TIMEOUT)
    assert_problem(response, 401, "AUTH_TOKEN_INVALID")
    sb.issue_token()
    assert_problem(sb.get(clientReference="x"), 404, "CRYPTO_REFUND_NOT_FOUND")


# --- refunds ---------------------------------------------------------------------------------


def test_refund_goes_created_confirmed_completed_with_txn_hash(sb: Sandbox) -> None:
    sb.configure(processing_seconds=0.2)
    reference = ref("happy")
    sb.flag("tx-happy", amount="12.50", currency="USDC", blockchain="ETH")
    created = sb.create("tx-happy", reference).json()["data"]
    assert created["cryptoRefundId"].startswith("CR")
    assert len(created["cryptoRefundId"]) == 22
    assert created["cryptoRefundId"][2:] == created["cryptoRefundId"][2:].upper()
    assert created == created | {
        "originalTransactionType": 1,
        "originalTransactionId": "tx-happy",
        "participantCode": "P000123",
        "clientReference": reference,
        "status": 1,
        "blockchain": "ETH",
        "currency": "USDC",
        "amount": "12.50",
        "refundAddress": "",
        "feeCurrency": "USDC",
        "feeAmount": "0.5",
        "txnHash": "",
    }
    assert {"createdAt", "updatedAt"} <= created.keys()

    confirmed = sb.confirm(created["cryptoRefundId"], address="TXdest").json()["data"]
    assert confirmed["status"] == 2
    assert confirmed["refundAddress"] == "TXdest"
    assert confirmed["txnHash"] == ""

    assert sb.statuses_until_final(created["cryptoRefundId"]) == [2, 3]
    final = sb.get(clientReference=reference).json()["data"]
    assert final["status"] == 3
    assert final["txnHash"].startswith("0x")
    assert len(final["txnHash"]) == 66
    assert sb.counters(prefix="happy")["effects"] == {reference: {"create": 1, "confirm": 1}}


@pytest.mark.parametrize(("outcome", "final"), [("failed", 4), ("rejected", 5)])
def test_payment_outcome_decides_the_final_status(sb: Sandbox, outcome: str, final: int) -> None:
    sb.configure(processing_seconds=0.05)
    sb.flag("tx-out", outcome=outcome)
    refund_id = sb.create("tx-out", ref()).json()["data"]["cryptoRefundId"]
    sb.confirm(refund_id)
    assert sb.statuses_until_final(refund_id) == [2, final]
    assert sb.get(cryptoRefundId=refund_id).json()["data"]["txnHash"] == ""


def test_unknown_status_phase_comes_between_processing_and_final(sb: Sandbox) -> None:
    sb.configure(processing_seconds=0.15, unknown_status_seconds=0.5, unknown_status_value=9)
    refund_id = sb.created_refund("tx-unk", ref())["cryptoRefundId"]
    sb.confirm(refund_id)
    assert sb.statuses_until_final(refund_id) == [2, 9, 3]


def test_config_change_after_confirm_does_not_move_refund_backwards(sb: Sandbox) -> None:
    sb.configure(processing_seconds=0.1)
    refund_id = sb.created_refund("tx-cap", ref())["cryptoRefundId"]
    sb.confirm(refund_id)
    sb.configure(processing_seconds=3600)
    assert sb.statuses_until_final(refund_id) == [2, 3]


def test_create_for_a_payment_not_pending_is_refused(sb: Sandbox) -> None:
    assert_problem(sb.create("tx-never", ref()), 422, "CRYPTO_REFUND_NOT_PENDING")
    sb.created_refund("tx-once", ref())
    # The payment's refund exists: a new reference cannot make a second one.
    assert_problem(sb.create("tx-once", ref()), 422, "CRYPTO_REFUND_NOT_PENDING")
    # Same id, other transaction type: a different payment.
    assert_problem(sb.create("tx-once", ref(), tx_type=2), 422, "CRYPTO_REFUND_NOT_PENDING")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"originalTransactionId": "t", "clientReference": "r"}, "originalTransactionType"),
        (
            {"originalTransactionType": 4, "originalTransactionId": "t", "clientReference": "r"},
            "originalTransactionType",
        ),
        (
            {"originalTransactionType": True, "originalTransactionId": "t", "clientReference": "r"},
            "originalTransactionType",
        ),
        (
            {"originalTransactionType": 1, "originalTransactionId": "", "clientReference": "r"},
            "originalTransactionId",
        ),
        ({"originalTransactionType": 1, "originalTransactionId": "t"}, "clientReference"),
        (
            {"originalTransactionType": 1, "originalTransactionId": "t", "clientReference": 5},
            "clientReference",
        ),
    ],
)
def test_invalid_create_names_the_field(sb: Sandbox, body: dict[str, Any], field: str) -> None:
    response = sb.http.post(sb.url(CREATE), json=body, headers=sb.headers(), timeout=TIMEOUT)
    assert field in assert_problem(response, 400, "INVALID_REQUEST")["detail"]


def test_duplicate_reference_returns_the_existing_refund_in_return_mode(sb: Sandbox) -> None:
    reference = ref()
    first = sb.created_refund("tx-dup", reference)
    sb.flag("tx-dup-2")
    again = sb.create("tx-dup-2", reference)
    assert again.status_code == 200
    assert again.json()["data"]["cryptoRefundId"] == first["cryptoRefundId"]
    assert sb.counters(prefix=reference)["effects"][reference]["create"] == 1
    # The second payment was not touched.
    assert sb.create("tx-dup-2", ref()).status_code == 200


def test_duplicate_reference_is_rejected_in_reject_mode(sb: Sandbox) -> None:
    sb.configure(duplicate_mode="reject")
    reference = ref()
    first = sb.created_refund("tx-dupr", reference)
    assert_problem(sb.create("tx-dupr", reference), 422, "DUPLICATE_CLIENT_REFERENCE")
    found = sb.get(clientReference=reference).json()["data"]
    assert found["cryptoRefundId"] == first["cryptoRefundId"]


def test_confirm_twice_returns_the_refund_in_return_mode(sb: Sandbox) -> None:
    reference = ref()
    refund_id = sb.created_refund("tx-c2", reference)["cryptoRefundId"]
    assert sb.confirm(refund_id).json()["data"]["status"] == 2
    again = sb.confirm(refund_id, address="other")
    assert again.status_code == 200
    assert again.json()["data"]["refundAddress"] == "TXaddr"
    assert sb.counters(prefix=reference)["effects"][reference]["confirm"] == 1


def test_confirm_twice_is_rejected_in_reject_mode(sb: Sandbox) -> None:
    sb.configure(confirm_mode="reject")
    refund_id = sb.created_refund("tx-c2r", ref())["cryptoRefundId"]
    assert sb.confirm(refund_id, address=None).json()["data"]["refundAddress"] == ""
    assert_problem(sb.confirm(refund_id), 422, "CRYPTO_REFUND_ALREADY_CONFIRMED")


def test_unknown_refund_is_not_found_with_configured_status(sb: Sandbox) -> None:
    assert_problem(sb.confirm("CR0000"), 404, "CRYPTO_REFUND_NOT_FOUND")
    assert_problem(sb.get(cryptoRefundId="CR0000"), 404, "CRYPTO_REFUND_NOT_FOUND")
    sb.configure(not_found_status=422)
    assert_problem(sb.confirm("CR0000"), 422, "CRYPTO_REFUND_NOT_FOUND")
    assert_problem(sb.get(clientReference="nobody"), 422, "CRYPTO_REFUND_NOT_FOUND")


def test_get_needs_an_id_or_a_reference(sb: Sandbox) -> None:
    detail = assert_problem(sb.get(), 400, "INVALID_REQUEST")["detail"]
    assert "cryptoRefundId" in detail
    assert_problem(sb.get(cryptoRefundId=""), 400, "INVALID_REQUEST")


def test_concurrent_creates_for_one_reference_make_one_refund(sb: Sandbox) -> None:
    reference = ref("race")
    sb.flag("tx-race")

    def create(_: int) -> str:
        with requests.Session() as http:
            response = http.post(
                sb.url(CREATE),
                json={
                    "originalTransactionType": 1,
                    "originalTransactionId": "tx-race",
                    "clientReference": reference,
                },
                headers=sb.headers(),
                timeout=TIMEOUT,
            )
            return str(response.json()["data"]["cryptoRefundId"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = set(pool.map(create, range(32)))
    assert len(ids) == 1
    assert sb.counters(prefix="race")["effects"] == {reference: {"create": 1, "confirm": 0}}


# --- idempotency -----------------------------------------------------------------------------


def test_same_key_and_params_replays_the_original_refund(sb: Sandbox) -> None:
    reference = ref()
    sb.flag("tx-idem")
    key = str(uuid.uuid4())
    first = sb.create("tx-idem", reference, key=key)
    replay = sb.create("tx-idem", reference, key=key)
    assert replay.status_code == first.status_code == 200
    assert replay.json() == first.json()
    assert sb.counters(prefix=reference)["effects"][reference]["create"] == 1


def test_replayed_key_keeps_a_business_error(sb: Sandbox) -> None:
    key = str(uuid.uuid4())
    reference = ref()
    assert_problem(sb.create("tx-late", reference, key=key), 422, "CRYPTO_REFUND_NOT_PENDING")
    sb.flag("tx-late")
    assert_problem(sb.create("tx-late", reference, key=key), 422, "CRYPTO_REFUND_NOT_PENDING")
    assert sb.create("tx-late", reference, key=str(uuid.uuid4())).status_code == 200


def test_same_key_with_different_params_is_refused(sb: Sandbox) -> None:
    sb.flag("tx-k1", "tx-k2")
    key = str(uuid.uuid4())
    assert sb.create("tx-k1", ref(), key=key).status_code == 200
    assert_problem(sb.create("tx-k2", ref(), key=key), 422, "IDEMPOTENCY_KEY_ALREADY_USED")
    # Nothing happened to the second payment.
    assert sb.create("tx-k2", ref()).status_code == 200


def test_keys_are_scoped_per_operation(sb: Sandbox) -> None:
    key = str(uuid.uuid4())
    sb.flag("tx-scope")
    created = sb.create("tx-scope", ref(), key=key).json()["data"]
    confirmed = sb.confirm(created["cryptoRefundId"], key=key)
    assert confirmed.status_code == 200
    assert confirmed.json()["data"]["status"] == 2


def test_idempotency_disabled_ignores_keys(sb: Sandbox) -> None:
    sb.configure(idempotency=False, duplicate_mode="reject")
    sb.flag("tx-noidem", "tx-noidem-2")
    key = str(uuid.uuid4())
    reference = ref()
    assert sb.create("tx-noidem", reference, key=key).status_code == 200
    # The provider forgot the key: the duplicate-reference guard is what answers now.
    assert_problem(sb.create("tx-noidem", reference, key=key), 422, "DUPLICATE_CLIENT_REFERENCE")
    # And a different body under the same key is not a key conflict.
    assert sb.create("tx-noidem-2", ref(), key=key).status_code == 200


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [("429", "RATE_LIMITED"), ("500", "INTERNAL_ERROR"), ("503", "SERVICE_UNAVAILABLE")],
)
def test_injected_error_has_no_effect_and_is_not_stored(
    sb: Sandbox, status: str, code: str
) -> None:
    sb.configure(error_rates={status: 1.0}, retry_after_seconds=2)
    sb.flag("tx-err")
    reference = ref("err")
    key = str(uuid.uuid4())
    response = sb.create("tx-err", reference, key=key)
    assert_problem(response, int(status), code)
    if status == "429":
        assert response.headers["Retry-After"] == "2"
    else:
        assert "Retry-After" not in response.headers
    counters = sb.counters(prefix="err")
    assert counters["effects"] == {}
    assert counters["faults"][status] == 1
    assert counters["responses"]["create"] == {status: 1}
    sb.configure(error_rates={})
    assert sb.create("tx-err", reference, key=key).status_code == 200


def test_injected_502_is_an_html_page(sb: Sandbox) -> None:
    sb.configure(error_rates={"502": 1.0})
    response = sb.get(clientReference="x")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text == "<html><body><h1>502 Bad Gateway</h1></body></html>"
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


def test_token_is_not_faulted_unless_listed(sb: Sandbox) -> None:
    sb.configure(error_rates={"503": 1.0})
    sb.issue_token()
    sb.configure(fault_operations=["token"])
    response = sb.http.post(
        sb.url(TOKEN),
        data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        timeout=TIMEOUT,
    )
    assert_problem(response, 503, "SERVICE_UNAVAILABLE")
    assert_problem(sb.get(clientReference="x"), 404, "CRYPTO_REFUND_NOT_FOUND")


def test_lost_response_took_effect_and_retry_with_same_key_returns_it(sb: Sandbox) -> None:
    sb.configure(lost_rate=1.0)
    sb.flag("tx-lost")
    reference = ref("lost")
    key = str(uuid.uuid4())
    with pytest.raises(requests.ConnectionError):
        sb.create("tx-lost", reference, key=key)
    counters = sb.counters(prefix="lost")
    assert counters["effects"] == {reference: {"create": 1, "confirm": 0}}
    assert counters["faults"]["lost"] == 1
    sb.configure(lost_rate=0.0)
    retry = sb.create("tx-lost", reference, key=key)
    assert retry.status_code == 200
    assert retry.json()["data"]["clientReference"] == reference
    assert sb.counters(prefix="lost")["effects"][reference]["create"] == 1


def test_slow_response_outlives_the_client_timeout_but_takes_effect(sb: Sandbox) -> None:
    sb.configure(slow_rate=1.0, slow_ms=600)
    sb.flag("tx-slow")
    reference = ref("slow")
    body = {
        "originalTransactionType": 1,
        "originalTransactionId": "tx-slow",
        "clientReference": reference,
    }
    with pytest.raises(requests.ReadTimeout):
        requests.post(sb.url(CREATE), json=body, headers=sb.headers(), timeout=(1, 0.15))
    counters = sb.counters(prefix="slow")
    assert counters["effects"] == {reference: {"create": 1, "confirm": 0}}
    assert counters["faults"]["slow"] == 1


def test_latency_is_added_to_provider_calls_only(sb: Sandbox) -> None:
    sb.configure(latency_ms=150)
    started = time.perf_counter()
    sb.get(clientReference="x")
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    sb.admin("GET", "/healthz")
    assert time.perf_counter() - started < 0.15


def test_max_rps_rate_limits_with_retry_after(sb: Sandbox) -> None:
    sb.configure(max_rps=2, retry_after_seconds=1)
    responses = [sb.get(clientReference="x") for _ in range(6)]
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) >= 3
    assert_problem(limited[0], 429, "RATE_LIMITED")
    assert limited[0].headers["Retry-After"] == "1"
    assert sb.counters()["faults"]["rate_limited"] == len(limited)


def test_seeded_faults_are_partial_and_repeatable(sb: Sandbox) -> None:
    def run() -> list[int]:
        assert sb.admin("POST", "/reset", {"error_rates": {"500": 0.5}}).status_code == 200
        sb.issue_token()
        return [sb.get(clientReference="x").status_code for _ in range(40)]

    first = run()
    assert set(first) == {404, 500}
    assert run() == first


# --- admin API -------------------------------------------------------------------------------


def test_counters_report_calls_responses_faults_and_filter_effects_by_prefix(sb: Sandbox) -> None:
    sb.created_refund("tx-a", "alpha-1")
    sb.created_refund("tx-b", "beta-1")
    sb.get(clientReference="alpha-1")
    sb.create("tx-none", "alpha-2")
    counters = sb.counters()
    assert counters["calls"] == {"token": 1, "create": 3, "confirm": 0, "get": 1}
    assert counters["responses"]["create"] == {"200": 2, "422": 1}
    assert counters["responses"]["get"] == {"200": 1}
    assert counters["tokens_issued"] == 1
    assert set(counters["faults"]) == {"429", "500", "502", "503", "lost", "slow", "rate_limited"}
    assert counters["effects"] == {
        "alpha-1": {"create": 1, "confirm": 0},
        "beta-1": {"create": 1, "confirm": 0},
    }
    assert sb.counters(prefix="alpha")["effects"] == {"alpha-1": {"create": 1, "confirm": 0}}


def test_a_call_still_running_at_a_reset_counts_nothing_after_it(sb: Sandbox) -> None:
    """A slow response (the sandbox sleeps after the work) finishing after a reset counted
    itself into the next test's counters: a cross-test flake under load."""
    sb.configure(slow_rate=1.0, slow_ms=600, fault_operations=["create"])
    sb.flag("tx-slow")
    with pytest.raises(requests.exceptions.ReadTimeout):
        sb.http.post(
            sb.url(CREATE),
            json={
                "originalTransactionType": 1,
                "originalTransactionId": "tx-slow",
                "clientReference": "slow-1",
            },
            headers=sb.headers(None),
            timeout=0.2,
        )
    assert sb.admin("POST", "/reset").status_code == 200
    time.sleep(0.8)  # the slow call's thread wakes up and answers now
    counters = sb.counters()
    assert not any(counters["responses"].values()) and counters["faults"].get("slow", 0) == 0


def test_config_round_trips_and_rejects_bad_updates_without_change(sb: Sandbox) -> None:
    config = sb.admin("GET", "/config").json()
    assert config == SandboxConfig().to_dict()
    updated = sb.configure(latency_ms=5, error_rates={"429": 0.25}, max_rps=None)
    assert updated["latency_ms"] == 5
    assert updated["error_rates"] == {"409": 0.0, "429": 0.25, "500": 0.0, "502": 0.0, "503": 0.0}
    for bad, field in [
        ({"nope": 1}, "nope"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": "5"}, "latency_ms"),
        ({"error_rates": {"404": 0.1}}, "error_rates.404"),
        ({"error_rates": {"500": 0.7, "503": 0.7}}, "error_rates"),
        ({"lost_rate": 1.5}, "lost_rate"),
        ({"duplicate_mode": "ignore"}, "duplicate_mode"),
        ({"not_found_status": 410}, "not_found_status"),
        ({"token_ttl_seconds": 0}, "token_ttl_seconds"),
        ({"idempotency": "yes"}, "idempotency"),
        ({"unknown_status_value": 3}, "unknown_status_value"),
        ({"fault_operations": ["create", "refund"]}, "fault_operations"),
        ({"latency_ms": 1, "max_rps": 0}, "max_rps"),
        ({"token_shape": "jwt"}, "token_shape"),
        ({"webhook_event_type": "crypto.refund.created"}, "webhook_event_type"),
        ({"webhook_code_msg": 1}, "webhook_code_msg"),
        ({"refund_overrides": {"r": {"status": "3"}}}, "refund_overrides.r.status"),
        ({"refund_overrides": {"r": {"amount": 5000}}}, "refund_overrides.r.amount"),
        ({"other_refund_id": "r-"}, "other_refund_id"),
        ({"confirm_async_seconds": -1}, "confirm_async_seconds"),
        ({"complete_unconfirmed_seconds": 0}, "complete_unconfirmed_seconds"),
        ({"not_found_lag_seconds": "1"}, "not_found_lag_seconds"),
        ({"duplicate_mode": "twice"}, "duplicate_mode"),
    ]:
        response = sb.admin("POST", "/config", bad)
        assert field in assert_problem(response, 400, "INVALID_REQUEST")["detail"], bad
    assert sb.admin("GET", "/config").json() == updated


def test_config_merge_raises_value_error_naming_the_field() -> None:
    base = SandboxConfig()
    with pytest.raises(ValueError, match=r"^slow_ms"):
        base.merge({"slow_ms": True})
    with pytest.raises(ValueError, match=r"^bogus"):
        base.merge({"bogus": 1})
    merged = base.merge({"processing_seconds": 0, "fault_operations": ["token"]})
    assert merged.processing_seconds == 0
    assert merged.fault_operations == ("token",)
    assert base.processing_seconds == 2.0


def test_flag_payments_validates_everything_before_flagging(sb: Sandbox) -> None:
    good = {"originalTransactionType": 1, "originalTransactionId": "tx-ok"}
    for bad, field in [
        ({"originalTransactionType": 1}, "payments[1].originalTransactionId"),
        ({**good, "amount": 12.5}, "payments[1].amount"),
        ({**good, "amount": "abc"}, "payments[1].amount"),
        ({**good, "amount": "-1"}, "payments[1].amount"),
        ({**good, "outcome": "lost"}, "payments[1].outcome"),
    ]:
        response = sb.admin("POST", "/payments", {"payments": [good, bad]})
        assert field in assert_problem(response, 400, "INVALID_REQUEST")["detail"]
    assert_problem(sb.create("tx-ok", ref()), 422, "CRYPTO_REFUND_NOT_PENDING")
    assert_problem(sb.admin("POST", "/payments", {"payments": "x"}), 400, "INVALID_REQUEST")


def test_reset_clears_state_and_can_start_from_a_config(sb: Sandbox) -> None:
    sb.created_refund("tx-r", "keep-1")
    response = sb.admin("POST", "/reset", {"duplicate_mode": "reject"})
    assert response.status_code == 200
    assert sb.admin("GET", "/config").json()["duplicate_mode"] == "reject"
    assert_problem(sb.get(clientReference="keep-1"), 401, "AUTH_TOKEN_INVALID")
    sb.issue_token()
    assert_problem(sb.get(clientReference="keep-1"), 404, "CRYPTO_REFUND_NOT_FOUND")
    assert sb.counters()["effects"] == {}
    assert_problem(sb.admin("POST", "/reset", {"bogus": 1}), 400, "INVALID_REQUEST")
    assert sb.admin("GET", "/config").json()["duplicate_mode"] == "reject"


def test_healthz_unknown_path_wrong_method_and_bad_json(sb: Sandbox) -> None:
    assert sb.admin("GET", "/healthz").json() == {"ok": True}
    assert_problem(sb.admin("GET", "/nothing"), 404, "NOT_FOUND")
    wrong = sb.http.delete(sb.url(CREATE), timeout=TIMEOUT)
    assert_problem(wrong, 405, "METHOD_NOT_ALLOWED")
    assert wrong.headers["Allow"] == "POST"
    bad = sb.http.post(sb.url(CREATE), data=b"{oops", headers=sb.headers(), timeout=TIMEOUT)
    assert_problem(bad, 400, "INVALID_REQUEST")
    bad_admin = sb.http.post(sb.url("/sandbox/config"), data=b"{oops", timeout=TIMEOUT)
    assert_problem(bad_admin, 400, "INVALID_REQUEST")


# --- transport -------------------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(server: SandboxServer) -> None:
    host, port = server.server_address[:2]
    request = f"GET /sandbox/healthz HTTP/1.1\r\nHost: {host!s}\r\n\r\n".encode()
    with socket.create_connection((str(host), port), timeout=5) as conn:
        for _ in range(3):
            conn.sendall(request)
            data = b""
            while not data.endswith(b'{"ok":true}'):
                chunk = conn.recv(4096)
                assert chunk, "server closed a keep-alive connection"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Content-Length: 11\r\n" in data


def test_module_entry_point_announces_and_exits_zero_on_sigterm() -> None:
    env = {**os.environ, "SANDBOX_CLIENT_ID": "env-id", "SANDBOX_CLIENT_SECRET": "env-secret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--config", '{"token_ttl_seconds": 5}'],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        base = line.removeprefix("sandbox listening on ")
        token = requests.post(
            base + TOKEN,
            data={"client_id": "env-id", "client_secret": "env-secret"},
            timeout=TIMEOUT,
        ).json()
        assert token["expires_in"] == 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_throughput_of_gets_over_keep_alive(sb: Sandbox) -> None:
    """Prints req/s for the record; asserts nothing about time (machines differ)."""
    refund_id = sb.created_refund("tx-bench", ref("bench"))["cryptoRefundId"]
    per_thread, threads = 500, 4

    def worker(_: int) -> int:
        ok = 0
        with requests.Session() as http:
            headers = sb.headers()
            for _ in range(per_thread):
                response = http.get(
                    sb.url(GET),
                    params={"cryptoRefundId": refund_id},
                    headers=headers,
                    timeout=TIMEOUT,
                )
                ok += response.status_code == 200
        return ok

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ok = sum(pool.map(worker, range(threads)))
    elapsed = time.perf_counter() - started
    total = per_thread * threads
    print(f"\nsandbox throughput: {total} GETs in {elapsed:.2f}s = {total / elapsed:,.0f} req/s")
    assert ok == total
    assert sb.counters()["calls"]["get"] == total


# --- contract v2 shapes and the switches of issue 10 ------------------------------------------


def test_status_info_labels_the_status_when_switched_on(sb: Sandbox) -> None:
    created = sb.created_refund("tx-si", ref("si"))
    assert "statusInfo" not in created
    sb.configure(status_info=True)
    got = sb.get(cryptoRefundId=created["cryptoRefundId"]).json()["data"]
    assert (got["status"], got["statusInfo"]) == (1, "PENDING")


@pytest.mark.parametrize(
    "text",
    [
        "0.00000021",
        "0.000000000000000001",
        "1000.000000000000000001",
        "123456789012345678901234567890.123456789",
        "-5000",
        "NaN",
        "Infinity",
    ],
)
def test_amounts_as_json_numbers_keep_the_exact_text(sb: Sandbox, text: str) -> None:
    reference = ref("num")
    sb.configure(amounts_as_numbers=True, refund_overrides={reference: {"amount": text}})
    sb.flag("tx-num")
    raw = sb.create("tx-num", reference).content
    assert f'"amount":{text},'.encode() in raw
    assert b'"feeAmount":0.5,' in raw


def test_custom_amount_and_empty_currency_per_reference(sb: Sandbox) -> None:
    reference = ref("big")
    sb.configure(refund_overrides={reference: {"amount": "5000", "currency": ""}})
    created = sb.created_refund("tx-big", reference)
    assert (created["amount"], created["currency"]) == ("5000", "")
    other = sb.created_refund("tx-small", ref("small"))
    assert (other["amount"], other["currency"]) == ("10.00", "USDT")


def test_async_confirm_answers_status_1_then_moves_to_2(sb: Sandbox) -> None:
    sb.configure(confirm_async_seconds=0.4, processing_seconds=0.2)
    refund_id = sb.created_refund("tx-async", ref("async"))["cryptoRefundId"]
    assert sb.confirm(refund_id, key="k1").json()["data"]["status"] == 1
    assert sb.get(cryptoRefundId=refund_id).json()["data"]["status"] == 1
    # Confirming again during the window is "already confirmed", not a second effect.
    assert sb.confirm(refund_id, key="k2").json()["data"]["status"] == 1
    assert sb.statuses_until_final(refund_id) == [1, 2, 3]
    effects = sb.counters(prefix="async")["effects"]
    assert [e["confirm"] for e in effects.values()] == [1]


def test_address_echo_answers_a_source_address_the_merchant_never_gave(sb: Sandbox) -> None:
    sb.configure(address_echo=True)
    created = sb.created_refund("tx-echo", ref("echo"))
    assert created["refundAddress"].startswith("T")
    assert len(created["refundAddress"]) == 33
    confirmed = sb.confirm(created["cryptoRefundId"], address=None).json()["data"]
    assert confirmed["refundAddress"] == created["refundAddress"]


def test_other_refund_id_is_named_by_get_but_not_by_create(sb: Sandbox) -> None:
    reference = ref("other")
    sb.configure(other_refund_id=["other-"], processing_seconds=0.05)
    created = sb.created_refund("tx-other", reference)
    sb.confirm(created["cryptoRefundId"])
    time.sleep(0.1)
    got = sb.get(clientReference=reference).json()["data"]
    assert got["cryptoRefundId"].startswith("CRX")
    assert got["cryptoRefundId"] != created["cryptoRefundId"]
    assert got["txnHash"].startswith("0x")
    assert len(got["txnHash"]) == 66


def test_not_found_lag_then_found(sb: Sandbox) -> None:
    sb.configure(not_found_lag_seconds=0.3, not_found_status=422)
    reference = ref("lag")
    sb.created_refund("tx-lag", reference)
    assert_problem(sb.get(clientReference=reference), 422, "CRYPTO_REFUND_NOT_FOUND")
    time.sleep(0.35)
    assert sb.get(clientReference=reference).json()["data"]["clientReference"] == reference


def test_duplicate_mode_new_dedupes_on_the_key_only(sb: Sandbox) -> None:
    sb.configure(duplicate_mode="new")
    reference = ref("dupnew")
    sb.flag("tx-dupnew")
    first = sb.create("tx-dupnew", reference, key="a").json()["data"]
    again = sb.create("tx-dupnew", reference, key="a").json()["data"]
    second = sb.create("tx-dupnew", reference, key="b").json()["data"]
    assert again["cryptoRefundId"] == first["cryptoRefundId"]
    assert second["cryptoRefundId"] != first["cryptoRefundId"]
    assert sb.counters(prefix="dupnew")["effects"] == {reference: {"create": 2, "confirm": 0}}


def test_complete_unconfirmed_finishes_a_refund_nobody_confirmed(sb: Sandbox) -> None:
    sb.configure(complete_unconfirmed_seconds=0.2)
    created = sb.created_refund("tx-done", ref("done"))
    assert created["status"] == 1
    time.sleep(0.25)
    got = sb.get(cryptoRefundId=created["cryptoRefundId"]).json()["data"]
    assert (got["status"], got["txnHash"][:2]) == (3, "0x")
    assert sb.confirm(created["cryptoRefundId"]).json()["data"]["status"] == 3


def test_participant_code_is_recorded_as_sent(sb: Sandbox) -> None:
    sb.created_refund("tx-pc", ref("pc"))
    recorded = sb.admin("GET", "/requests", operation="create").json()["requests"]["create"]
    assert "participantCode" not in recorded[-1]["body"]
    assert_problem(
        sb.http.post(
            sb.url(CREATE),
            json={
                "originalTransactionType": 1,
                "originalTransactionId": "tx-x",
                "clientReference": "pc-x",
                "participantCode": "",
            },
            headers=sb.headers(),
            timeout=TIMEOUT,
        ),
        400,
        "INVALID_REQUEST",
    )
