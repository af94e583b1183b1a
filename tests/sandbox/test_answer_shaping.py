"""The switches that shape how an answer travels, and the HTTP 200 that carries an error.

Raw HTTP against an in-process simulator: what the wire shows for a trickled answer (its pace),
a padded one (its declared and real size, still valid JSON), an endless one (no length, bytes
until the client hangs up) and an error envelope (status 200, the code, ``msg`` and ``logId``,
and no effect on the provider's state). Bad switch values are refused, naming the field.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox import SandboxConfig, make_server
from sandbox.config import ConfigError
from sandbox.server import SandboxServer

GET = "/v1.0/payment/crypto/getCryptoRefund"
CREATE = "/v1.0/payment/crypto/createCryptoRefund"
TOKEN = "/v1.0/oauth/token"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    srv = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def http(server: SandboxServer) -> Iterator[requests.Session]:
    session = requests.Session()
    assert session.post(f"{server.url}/sandbox/reset", timeout=5).status_code == 200
    yield session
    session.close()


def _configure(http: requests.Session, server: SandboxServer, **switches: Any) -> None:
    response = http.post(f"{server.url}/sandbox/config", json=switches, timeout=5)
    assert response.status_code == 200, response.text


def _token(http: requests.Session, server: SandboxServer) -> str:
    form = {"client_id": "sandbox-client-id", "client_secret": "sandbox-client-secret"}
    return str(http.post(f"{server.url}{TOKEN}", data=form, timeout=5).json()["access_token"])


def test_a_trickled_answer_arrives_at_the_configured_pace(
    http: requests.Session, server: SandboxServer
) -> None:
    _configure(http, server, trickle_bytes=64, trickle_interval_ms=20, fault_operations=["get"])
    started = time.monotonic()
    response = http.get(f"{server.url}{GET}", params={"clientReference": "x"}, timeout=30)
    took = time.monotonic() - started
    size = len(response.content) + 150  # the head: status line and five fields, about 150 bytes
    assert response.status_code == 401  # the answer itself is unchanged, only slow
    assert took >= (size // 64) * 0.02 * 0.9, took


def test_a_padded_answer_has_the_size_it_declares_and_stays_json(
    http: requests.Session, server: SandboxServer
) -> None:
    _configure(http, server, answer_size_bytes=300_000, fault_operations=["get"])
    response = http.get(f"{server.url}{GET}", params={"clientReference": "x"}, timeout=10)
    assert response.headers["Content-Length"] == "300000"
    assert len(response.content) == 300_000
    body = json.loads(response.content)
    assert body["code"] == "AUTH_TOKEN_INVALID"
    assert set(body["padding"]) == {"x"}


def test_an_endless_answer_has_no_length_and_flows_until_the_client_hangs_up(
    http: requests.Session, server: SandboxServer
) -> None:
    _configure(http, server, endless_answer=True, fault_operations=["get"])
    response = http.get(
        f"{server.url}{GET}", params={"clientReference": "x"}, timeout=10, stream=True
    )
    assert "Content-Length" not in response.headers
    assert response.headers["Connection"] == "close"
    read = 0
    for chunk in response.iter_content(64 * 1024):
        read += len(chunk)
        if read > 3 << 20:
            break
    response.close()
    assert read > 3 << 20
    # The simulator goes on serving once the reader has gone.
    _configure(http, server, endless_answer=False)


@pytest.mark.parametrize("code", ["CRYPTO_REFUND_NOT_PENDING", 500, "503"])
def test_an_error_envelope_comes_as_http_200_and_does_nothing(
    http: requests.Session, server: SandboxServer, code: object
) -> None:
    token = _token(http, server)
    flagged = {"originalTransactionType": 1, "originalTransactionId": "tx-env"}
    http.post(f"{server.url}/sandbox/payments", json={"payments": [flagged]}, timeout=5)
    _configure(
        http,
        server,
        envelope_error_code=code,
        envelope_error_msg="said so",
        fault_operations=["create"],
    )
    response = http.post(
        f"{server.url}{CREATE}",
        json={**flagged, "clientReference": "env-ref"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["msg"]) == (code, "said so")
    assert len(body["logId"]) == 16
    assert "data" not in body
    counters = http.get(f"{server.url}/sandbox/counters", timeout=5).json()
    assert counters["effects"].get("env-ref", {}).get("create", 0) == 0
    assert counters["faults"]["envelope_error"] == 1


@pytest.mark.parametrize(
    ("switch", "value", "says"),
    [
        ("trickle_bytes", -1, "trickle_bytes: must be an integer >= 0"),
        ("trickle_bytes", 1.5, "trickle_bytes: must be an integer >= 0"),
        ("trickle_interval_ms", -5, "trickle_interval_ms: must be >= 0"),
        ("answer_size_bytes", "big", "answer_size_bytes: must be an integer >= 0"),
        ("endless_answer", 1, "endless_answer: must be true or false"),
        ("envelope_error_code", 200, "envelope_error_code: must be null or an error code"),
        ("envelope_error_code", "", "envelope_error_code: must be null or an error code"),
        ("envelope_error_msg", "", "envelope_error_msg: must be a non-empty string"),
    ],
)
def test_bad_answer_switches_are_refused_naming_the_field(
    switch: str, value: object, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        SandboxConfig().merge({switch: value})
