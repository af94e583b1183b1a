"""The sandbox's Crypto Refund Webhook over real HTTP: signing, timing, faults, retries, replay.

One in-process sandbox (port 0) and one in-process receiver (a stdlib server on port 0 that records
raw bodies and headers and answers a scripted status) serve the module; each test resets both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from sandbox import SandboxConfig, make_server
from sandbox.server import SandboxServer

CLIENT_ID = "wh-client"
CLIENT_SECRET = "wh-secret"
DEFAULT_SECRET = "sandbox-webhook-secret"
TIMEOUT = (2.0, 5.0)

TOKEN = "/v1.0/oauth/token"
CREATE = "/v1.0/payment/crypto/createCryptoRefund"
CONFIRM = "/v1.0/payment/crypto/confirmCryptoRefund"
GET = "/v1.0/payment/crypto/getCryptoRefund"


# --- the merchant's side: a receiver that records everything ----------------------------------


@dataclass(frozen=True)
class Received:
    body: bytes
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    answered: int

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def notification_id(self) -> str:
        return str(self.json["notificationId"])

    @property
    def status(self) -> int:
        return int(self.json["data"]["status"])

    @property
    def reference(self) -> str:
        return str(self.json["data"]["clientReference"])


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.cond = threading.Condition()
        self.received: list[Received] = []
        self.epoch = 0  # bumped by clear(): late requests from an earlier test are not recorded
        self.script: list[int] = []  # answers for the next requests, then `default`
        self.default = 200
        self.delay = 0.0

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can hang on a DNS timeout.
        socketserver.TCPServer.server_bind(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/webhooks/mce?src=sandbox"

    def clear(self) -> None:
        with self.cond:
            self.epoch += 1
            self.received.clear()
            self.script, self.default, self.delay = [], 200, 0.0

    def answer(self, *statuses: int, then: int = 200) -> None:
        with self.cond:
            self.script, self.default = list(statuses), then

    def record(self, epoch: int, body: bytes, headers: dict[str, str]) -> int:
        with self.cond:
            if epoch != self.epoch:
                return 200
            answered = self.script.pop(0) if self.script else self.default
            self.received.append(Received(body, headers, time.monotonic(), answered))
            self.cond.notify_all()
            return answered

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.received) >= count, timeout)
            assert ok, f"expected {count} webhooks, got {len(self.received)}"
            return list(self.received)

    def snapshot(self) -> list[Received]:
        with self.cond:
            return list(self.received)


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        epoch = self.server.epoch
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        assert self.path == "/webhooks/mce?src=sandbox"
        if self.server.delay:
            time.sleep(self.server.delay)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = self.server.record(epoch, body, headers)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def verify(received: Received, secret: str = DEFAULT_SECRET) -> None:
    """What the pipeline's receiver must do with ``X-Signature: t=<epoch ms>,v0=<hex>``: HMAC of
    "{t}.{raw body}", a recent timestamp in milliseconds."""
    header = received.headers["x-signature"]
    pairs = dict(part.split("=", 1) for part in header.split(","))
    assert set(pairs) == {"t", "v0"}
    timestamp = pairs["t"]
    assert timestamp.isascii() and timestamp.isdigit()
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(pairs["v0"], expected)
    assert abs(time.time() * 1000 - int(timestamp)) < 60_000
    assert "x-mce-signature" not in received.headers
    assert "x-mce-timestamp" not in received.headers


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    srv = Receiver()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    srv = make_server("127.0.0.1", 0, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, seed=3)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


class Sandbox:
    def __init__(self, base: str, hook_url: str) -> None:
        self.base = base
        self.hook_url = hook_url
        self.http = requests.Session()
        self.token = ""

    def admin(self, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
        return self.http.request(
            method, f"{self.base}/sandbox{path}", json=body, params=params, timeout=TIMEOUT
        )

    def reset(self, **config: Any) -> None:
        body = {"webhook_url": self.hook_url, "processing_seconds": 0.2, **config}
        response = self.admin("POST", "/reset", body)
        assert response.status_code == 200, response.text
        response = self.http.post(
            self.base + TOKEN,
            data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            timeout=TIMEOUT,
        )
        self.token = response.json()["access_token"]

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(
            self.base + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def get(self, refund_id: str) -> dict[str, Any]:
        response = self.http.get(
            self.base + GET,
            params={"cryptoRefundId": refund_id},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=TIMEOUT,
        )
        return dict(response.json()["data"])

    def create(self, reference: str, outcome: str = "completed") -> dict[str, Any]:
        tx_id = "tx-" + reference
        payment = {"originalTransactionType": 1, "originalTransactionId": tx_id, "outcome": outcome}
        assert self.admin("POST", "/payments", {"payments": [payment]}).status_code == 200
        return self.call(
            CREATE,
            {
                "originalTransactionType": 1,
                "originalTransactionId": tx_id,
                "clientReference": reference,
            },
        )

    def confirm(self, refund_id: str) -> dict[str, Any]:
        return self.call(CONFIRM, {"cryptoRefundId": refund_id, "refundAddress": "TXaddr"})

    def refund(self, reference: str) -> str:
        """Create and confirm: three status changes (1, 2, then 3 after processing_seconds)."""
        refund_id = str(self.create(reference)["cryptoRefundId"])
        self.confirm(refund_id)
        return refund_id

    def webhook_counters(self) -> dict[str, Any]:
        return dict(self.admin("GET", "/counters").json()["webhooks"])

    def deliveries(self, prefix: str = "") -> list[dict[str, Any]]:
        return list(self.admin("GET", "/webhooks", prefix=prefix).json()["deliveries"])

    def wait_counters(self, timeout: float = 5.0, **expected: int) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            counters = self.webhook_counters()
            if all(counters[k] == v for k, v in expected.items()):
                return counters
            assert time.monotonic() < end, f"counters {counters} never matched {expected}"
            time.sleep(0.02)


@pytest.fixture
def sb(server: SandboxServer, receiver: Receiver) -> Sandbox:
    host, port = server.server_address[:2]
    sandbox = Sandbox(f"http://{host!s}:{port}", receiver.url)
    sandbox.reset()
    receiver.clear()
    return sandbox


def ref(label: str = "r") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def closed_port() -> int:
    """A local port nothing listens on (bound once to pick it, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the request --------------------------------------------------------------------------------


def test_webhook_is_signed_over_the_raw_body_and_carries_the_refund_as_get_shows_it(
    sb: Sandbox, receiver: Receiver
) -> None:
    created = sb.create(ref("sig"))
    [hook] = receiver.wait_for(1)
    verify(hook)
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["x-signature"] == hook.headers["x-signature"].lower()
    body = hook.json
    assert set(body) == {"eventType", "notificationId", "data"}
    assert body["eventType"] == "crypto.refund.updated"
    assert uuid.UUID(body["notificationId"]).version == 4
    assert body["data"] == created == sb.get(created["cryptoRefundId"])
    # A different secret must not verify: the signature really depends on it.
    with pytest.raises(AssertionError):
        verify(hook, secret="not-the-secret")


def test_v2_switches_shape_the_webhook_body(sb: Sandbox, receiver: Receiver) -> None:
    reference = ref("v2")
    sb.reset(
        webhook_events=[1],
        webhook_event_type="crypto.refund.updated.v2",
        webhook_code_msg=True,
        webhook_amounts_as_numbers=True,
        status_info=True,
        refund_overrides={reference: {"feeAmount": "0.00000021"}},
    )
    created = sb.create(reference)
    [hook] = receiver.wait_for(1)
    verify(hook)
    body = hook.json
    assert (body["code"], body["msg"], body["eventType"]) == (
        200,
        "success",
        "crypto.refund.updated.v2",
    )
    assert body["data"]["statusInfo"] == "PENDING"
    assert b'"amount":10.00,' in hook.body
    assert b'"feeAmount":0.00000021,' in hook.body
    # Only webhooks carry numbers under this switch; answers keep decimal strings.
    assert created["amount"] == "10.00"


def test_complete_unconfirmed_sends_a_status_3_webhook_without_a_confirm(
    sb: Sandbox, receiver: Receiver
) -> None:
    sb.reset(complete_unconfirmed_seconds=0.2)
    created = sb.create(ref("unconf"))
    first, final = receiver.wait_for(2)
    assert (first.status, final.status) == (1, 3)
    assert final.json["data"]["cryptoRefundId"] == created["cryptoRefundId"]
    assert final.json["data"]["txnHash"].startswith("0x")


def test_other_refund_id_is_named_by_webhooks(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(other_refund_id=["oid-"], webhook_events=[1])
    created = sb.create(ref("oid"))
    [hook] = receiver.wait_for(1)
    assert hook.json["data"]["cryptoRefundId"] != created["cryptoRefundId"]
    assert hook.json["data"]["cryptoRefundId"].startswith("CRX")


def test_configured_secret_is_used_for_the_signature(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(webhook_secret="rotated-secret")
    sb.create(ref("secret"))
    verify(receiver.wait_for(1)[0], secret="rotated-secret")


def test_each_status_change_is_sent_once_and_in_order_without_any_get(
    sb: Sandbox, receiver: Receiver
) -> None:
    reference = ref("order")
    refund_id = sb.refund(reference)
    confirmed_at = time.monotonic()
    hooks = receiver.wait_for(3)
    assert [h.status for h in hooks] == [1, 2, 3]
    assert len({h.notification_id for h in hooks}) == 3
    assert all(h.reference == reference for h in hooks)
    # The ticker applied 2 -> 3 on time, although nobody asked with Get.
    assert hooks[2].at - confirmed_at < 0.2 + 1.0
    assert sb.admin("GET", "/counters").json()["calls"]["get"] == 0
    assert hooks[2].json["data"]["txnHash"].startswith("0x")
    assert hooks[1].json["data"]["txnHash"] == ""
    assert hooks[2].json["data"] == sb.get(refund_id)
    time.sleep(0.2)
    assert len(receiver.snapshot()) == 3


def test_unknown_status_phase_is_sent_too_and_events_can_be_filtered(
    sb: Sandbox, receiver: Receiver
) -> None:
    sb.reset(unknown_status_seconds=0.1, unknown_status_value=7)
    sb.refund(ref("unknown"))
    assert [h.status for h in receiver.wait_for(4)] == [1, 2, 7, 3]

    sb.reset(webhook_events=[3, 4, 5])
    receiver.clear()
    sb.refund(ref("finals"))
    sb.wait_counters(delivered=1)
    time.sleep(0.1)
    assert [h.status for h in receiver.snapshot()] == [3]


def test_webhooks_are_off_without_a_url(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(webhook_url=None, processing_seconds=0)
    refund_id = sb.refund(ref("off"))
    assert sb.get(refund_id)["status"] == 3
    time.sleep(0.1)
    assert receiver.snapshot() == []
    assert sb.webhook_counters() == {
        "queued": 0,
        "delivered": 0,
        "failed": 0,
        "dropped": 0,
        "duplicated": 0,
        "attempts": 0,
        "responses": {},
        "pending": 0,
    }


# --- faults -------------------------------------------------------------------------------------


def test_duplicates_carry_the_same_notification_id_and_body(
    sb: Sandbox, receiver: Receiver
) -> None:
    sb.reset(webhook_duplicate_rate=1.0)
    sb.refund(ref("dup"))
    hooks = receiver.wait_for(6)
    by_id: dict[str, list[Received]] = {}
    for hook in hooks:
        by_id.setdefault(hook.notification_id, []).append(hook)
    assert len(by_id) == 3
    for copies in by_id.values():
        assert len(copies) == 2
        assert copies[0].body == copies[1].body
        verify(copies[1])
    counters = sb.wait_counters(delivered=6)
    assert counters["duplicated"] == 3
    assert counters["queued"] == 6


def test_drop_rate_one_delivers_nothing_and_counts_the_drops(
    sb: Sandbox, receiver: Receiver
) -> None:
    sb.reset(webhook_drop_rate=1.0)
    refund_id = sb.refund(ref("drop"))
    counters = sb.wait_counters(dropped=3)
    assert counters["queued"] == counters["delivered"] == counters["attempts"] == 0
    assert receiver.snapshot() == []
    # Polling still sees the truth.
    assert sb.get(refund_id)["status"] == 3


def test_a_500_is_retried_with_the_same_notification_and_then_succeeds(
    sb: Sandbox, receiver: Receiver
) -> None:
    sb.reset(webhook_retry_base_ms=50, webhook_events=[1])
    receiver.answer(500)
    reference = ref("retry")
    sb.create(reference)
    first, second = receiver.wait_for(2)
    assert first.answered == 500
    assert second.answered == 200
    assert first.body == second.body
    verify(first)
    verify(second)
    assert second.at - first.at >= 0.04  # the backoff was waited
    counters = sb.wait_counters(delivered=1)
    assert counters["attempts"] == 2
    assert counters["responses"] == {"500": 1, "200": 1}
    assert counters["failed"] == counters["pending"] == 0
    [delivery] = sb.deliveries(prefix=reference)
    assert delivery["notificationId"] == first.notification_id
    assert delivery["outcome"] == "delivered"
    assert delivery["attempts"] == 2
    assert delivery["last_status"] == 200
    assert delivery["status"] == 1
    assert delivery["clientReference"] == reference
    assert abs(delivery["delivered_at"] - time.time()) < 10


def test_a_receiver_always_failing_is_given_up_after_max_attempts(
    sb: Sandbox, receiver: Receiver
) -> None:
    sb.reset(webhook_retry_base_ms=10, webhook_max_attempts=3, webhook_events=[1])
    receiver.answer(then=500)
    reference = ref("fail")
    sb.create(reference)
    counters = sb.wait_counters(failed=1)
    assert counters["attempts"] == 3
    assert counters["delivered"] == 0
    assert counters["responses"] == {"500": 3}
    hooks = receiver.snapshot()
    assert len(hooks) == 3
    assert len({h.notification_id for h in hooks}) == 1
    [delivery] = sb.deliveries(prefix=reference)
    assert delivery["outcome"] == "failed"
    assert delivery["attempts"] == 3
    assert delivery["last_status"] == 500
    assert delivery["delivered_at"] is None


def test_connection_errors_are_retried_and_counted(sb: Sandbox) -> None:
    sb.reset(
        webhook_url=f"http://127.0.0.1:{closed_port()}/x",
        webhook_retry_base_ms=10,
        webhook_max_attempts=2,
        webhook_events=[1],
    )
    sb.create(ref("dead"))
    counters = sb.wait_counters(failed=1)
    assert counters["responses"] == {"error": 2}


def test_jitter_reorders_deliveries(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(webhook_jitter_ms=300, webhook_events=[1])
    references = [f"{ref('jit')}-{i:02d}" for i in range(25)]
    for reference in references:
        sb.create(reference)
    arrived = [h.reference for h in receiver.wait_for(len(references))]
    assert sorted(arrived) == sorted(references)
    # 25 creations over a few ms, each delayed by 0..300 ms: arriving in creation order has a
    # chance of about 1/25! (the seed is fixed as well).
    assert arrived != references


def test_delay_holds_each_delivery_back(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(webhook_delay_ms=300, webhook_events=[1])
    started = time.monotonic()
    sb.create(ref("delay"))
    [hook] = receiver.wait_for(1)
    assert hook.at - started >= 0.29


def test_a_slow_receiver_never_slows_the_provider(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(webhook_events=[1])
    receiver.delay = 0.5
    started = time.monotonic()
    for _ in range(5):
        sb.create(ref("slow"))
    assert time.monotonic() - started < 0.3
    assert len(receiver.wait_for(5, timeout=2)) == 5
    sb.wait_counters(delivered=5)


# --- admin --------------------------------------------------------------------------------------


def test_replay_resends_the_same_notification_with_a_fresh_signature(
    sb: Sandbox, receiver: Receiver
) -> None:
    sb.reset(webhook_events=[1])
    reference = ref("replay")
    sb.create(reference)
    [original] = receiver.wait_for(1)
    response = sb.admin("POST", "/webhooks/replay", {"notificationId": original.notification_id})
    assert response.status_code == 200, response.text
    assert response.json() == {"replayed": original.notification_id}
    _, replayed = receiver.wait_for(2)
    assert replayed.body == original.body
    verify(replayed)
    sb.wait_counters(delivered=2)
    assert [d["replay"] for d in sb.deliveries(prefix=reference)] == [False, True]

    unknown = sb.admin("POST", "/webhooks/replay", {"notificationId": str(uuid.uuid4())})
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "NOT_FOUND"
    missing = sb.admin("POST", "/webhooks/replay", {})
    assert missing.status_code == 400
    assert "notificationId" in missing.json()["detail"]
    assert sb.admin("POST", "/config", {"webhook_url": None}).status_code == 200
    nowhere = sb.admin("POST", "/webhooks/replay", {"notificationId": original.notification_id})
    assert nowhere.status_code == 400
    assert nowhere.json()["detail"].startswith("webhook_url")


def test_deliveries_are_listed_by_reference_prefix(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(webhook_events=[1])
    sb.create("alpha-1")
    sb.create("beta-1")
    receiver.wait_for(2)
    sb.wait_counters(delivered=2)
    assert [d["clientReference"] for d in sb.deliveries(prefix="alpha")] == ["alpha-1"]
    assert len(sb.deliveries()) == 2


def test_reset_forgets_pending_deliveries_and_counters(sb: Sandbox, receiver: Receiver) -> None:
    sb.reset(webhook_delay_ms=300)
    sb.create(ref("reset"))
    assert sb.webhook_counters()["pending"] == 1
    sb.reset()
    assert sb.webhook_counters()["queued"] == 0
    time.sleep(0.45)
    assert receiver.snapshot() == []
    assert sb.deliveries() == []


def test_webhook_config_is_validated_field_by_field(sb: Sandbox) -> None:
    defaults = SandboxConfig().to_dict()
    assert defaults["webhook_url"] is None
    assert defaults["webhook_secret"] == DEFAULT_SECRET
    assert defaults["webhook_events"] == [1, 2, 3, 4, 5, "unknown"]
    assert defaults["webhook_max_attempts"] == 5
    before = sb.admin("GET", "/config").json()
    for bad, field in [
        ({"webhook_url": "ftp://host/x"}, "webhook_url"),
        ({"webhook_url": "http://"}, "webhook_url"),
        ({"webhook_url": "http://host:port/x"}, "webhook_url"),
        ({"webhook_url": 8000}, "webhook_url"),
        ({"webhook_secret": ""}, "webhook_secret"),
        ({"webhook_delay_ms": -1}, "webhook_delay_ms"),
        ({"webhook_jitter_ms": "5"}, "webhook_jitter_ms"),
        ({"webhook_duplicate_rate": 1.5}, "webhook_duplicate_rate"),
        ({"webhook_drop_rate": -0.1}, "webhook_drop_rate"),
        ({"webhook_max_attempts": 0}, "webhook_max_attempts"),
        ({"webhook_max_attempts": 2.5}, "webhook_max_attempts"),
        ({"webhook_retry_base_ms": None}, "webhook_retry_base_ms"),
        ({"webhook_timeout_seconds": 0}, "webhook_timeout_seconds"),
        ({"webhook_events": "all"}, "webhook_events"),
        ({"webhook_events": [1, "final"]}, "webhook_events"),
        ({"webhook_events": [True]}, "webhook_events"),
    ]:
        response = sb.admin("POST", "/config", bad)
        assert response.status_code == 400, bad
        assert response.json()["detail"].startswith(field), bad
    assert sb.admin("GET", "/config").json() == before
    merged = SandboxConfig().merge(
        {"webhook_url": "https://hooks.example/mce", "webhook_events": [3]}
    )
    assert merged.webhook_url == "https://hooks.example/mce"
    assert merged.webhook_events == (3,)


def test_module_entry_point_takes_webhook_flags_and_exits_zero_on_sigterm(
    receiver: Receiver,
) -> None:
    receiver.clear()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--config",
            '{"webhook_secret": "from-config"}',
            "--webhook-url",
            receiver.url,
            "--webhook-secret",
            "from-flag",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SANDBOX_CLIENT_ID": CLIENT_ID, "SANDBOX_CLIENT_SECRET": CLIENT_SECRET},
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip().removeprefix("sandbox listening on ")
        sandbox = Sandbox(base, receiver.url)
        config = sandbox.admin("GET", "/config").json()
        assert config["webhook_url"] == receiver.url
        assert config["webhook_secret"] == "from-flag"
        sandbox.reset(webhook_secret="from-flag", webhook_delay_ms=200)
        sandbox.create(ref("cli"))
        verify(receiver.wait_for(1)[0], secret="from-flag")
        sandbox.create(ref("cli-pending"))  # still queued when the signal arrives
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_webhook_flag_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "--port", "0", "--webhook-url", "not-a-url"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 2
    assert "webhook_url" in result.stderr


# --- payment webhooks with a KYT result (sandbox.payment_webhooks) ---------------------------


def _flagged(txn: str, **webhook: Any) -> dict[str, Any]:
    return {
        "originalTransactionType": 3,
        "originalTransactionId": txn,
        "amount": "0.000000000000000001",
        "currency": "USDC",
        "webhook": webhook,
    }


def test_flagging_a_payment_sends_its_signed_payment_webhook_in_the_default_shape(
    sb: Sandbox, receiver: Receiver
) -> None:
    answer = sb.admin("POST", "/payments", {"payments": [_flagged("TX-K1", kytResult=3)]})
    assert answer.status_code == 200, answer.text
    [nid] = answer.json()["webhooks"]
    [got] = receiver.wait_for(1)
    verify(got)
    assert got.body.count(b'"amount":0.000000000000000001') == 1  # a JSON number, exact
    event = got.json
    assert (event["eventType"], event["notificationId"]) == ("crypto.checkout.updated.v2", nid)
    data = event["data"]
    assert data["transactionId"] == "TX-K1"
    assert data["statusInfo"] == "PENDING_REFUND"
    assert data["kytInfo"]["kytResult"] == 3
    assert data["kytInfo"]["kytDetails"] == "High risk - further review required"


def test_payment_webhooks_come_in_other_shapes_with_any_kyt_result_and_repeat_on_request(
    sb: Sandbox, receiver: Receiver
) -> None:
    items = [
        {**_flagged("TX-K2", kytResult=42, shape="flat", copies=3)},
        {**_flagged("TX-K3", shape="no-kyt", notificationId="n-fixed-1")},
    ]
    answer = sb.admin("POST", "/payments/webhooks", {"payments": items})
    assert answer.status_code == 200, answer.text
    flat_id, fixed = answer.json()["webhooks"]
    assert fixed == "n-fixed-1"
    got = receiver.wait_for(4)
    flat = [r for r in got if r.notification_id == flat_id]
    assert len(flat) == 3 and len({r.body for r in flat}) == 1  # byte-identical copies
    assert flat[0].json["data"]["kytResult"] == 42
    assert flat[0].json["data"]["txnId"] == "TX-K2"
    bare = next(r for r in got if r.notification_id == fixed).json["data"]
    assert "kytInfo" not in bare and "kytResult" not in bare
    for received in got:
        verify(received)


def test_a_payment_webhook_with_an_unknown_shape_is_refused_whole(sb: Sandbox) -> None:
    answer = sb.admin("POST", "/payments", {"payments": [_flagged("TX-K4", shape="round")]})
    assert answer.status_code == 400
    assert "payments[0].webhook.shape" in answer.text
    create = sb.http.post(
        sb.base + CREATE,
        json={
            "originalTransactionType": 3,
            "originalTransactionId": "TX-K4",
            "clientReference": "k4",
        },
        headers={"Authorization": f"Bearer {sb.token}"},
        timeout=TIMEOUT,
    )
    assert create.status_code == 422  # not flagged either: nothing changed
    unknown = sb.admin("POST", "/payments", {"payments": [_flagged("TX-K5", colour="red")]})
    assert unknown.status_code == 400
    assert "colour" in unknown.text
