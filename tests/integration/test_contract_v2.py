"""The client speaks contract v2 to the real simulator over HTTP (provider-contract.md 2, 3, 5).

An in-process sandbox (port 0) and the session's private Redis (its own database for the token
cache). Every token answer shape the sandbox can give is read by the real client; the sandbox's
record of what it received proves what was sent (form fields, no grant_type, participantCode only
when configured, the version prefix).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests

from config.settings import Settings, load_settings
from refunds.mce.auth import TokenCache
from refunds.mce.client import MceClient
from sandbox import make_server
from sandbox.server import SandboxServer

CLIENT_ID = "v2-client"
CLIENT_SECRET = "v2-secret-value"


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    srv = make_server("127.0.0.1", 0, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def base(server: SandboxServer) -> str:
    assert requests.post(server.url + "/sandbox/reset", timeout=5).ok
    return server.url


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/11", decode_responses=True)
    client.flushdb()  # our private server's database, not the shared Redis
    yield client
    client.flushdb()


def make_client(base: str, db: redis.Redis, **overrides: Any) -> MceClient:
    settings: Settings = load_settings(
        profile="sandbox",
        mce_base_url=base,
        mce_client_id=CLIENT_ID,
        mce_client_secret=CLIENT_SECRET,
        **overrides,
    )
    client = MceClient(settings, session=requests.Session())
    client.tokens = TokenCache(db, settings, client.fetch_token)
    return client


def configure(base: str, **fields: Any) -> None:
    response = requests.post(base + "/sandbox/config", json=fields, timeout=5)
    assert response.status_code == 200, response.text


def recorded(base: str, operation: str) -> list[dict[str, Any]]:
    body = requests.get(base + "/sandbox/requests", params={"operation": operation}, timeout=5)
    return list(body.json()["requests"].get(operation, []))


def flag(base: str, txn: str, **fields: Any) -> None:
    payments = [{"originalTransactionType": 1, "originalTransactionId": txn, **fields}]
    assert requests.post(base + "/sandbox/payments", json={"payments": payments}, timeout=5).ok


@pytest.mark.parametrize(
    ("shape", "lifetime"),
    [("oauth", 7), ("envelope", 7), ("envelope_snake", 7), ("no_lifetime", 42)],
)
def test_client_reads_every_token_answer_shape(
    base: str, redis_db: redis.Redis, shape: str, lifetime: float
) -> None:
    configure(base, token_shape=shape, token_ttl_seconds=7)
    client = make_client(base, redis_db, mce_token_default_lifetime=42)
    token = client.fetch_token()
    assert len(token.access_token) >= 32
    assert token.expires_in == lifetime
    [sent] = recorded(base, "token")
    assert sent["path"] == "/v1.0/oauth/token"
    assert sent["contentType"] == "application/x-www-form-urlencoded"
    assert sent["body"] == {"client_id": CLIENT_ID, "client_secret": "***"}  # no grant_type
    # And the token works for a real call.
    flag(base, f"tx-{shape}")
    ref = f"tok-{shape}-{uuid.uuid4().hex[:8]}"
    created = client.create(
        original_transaction_type=1,
        original_transaction_id=f"tx-{shape}",
        client_reference=ref,
        key=str(uuid.uuid4()),
    )
    assert created.client_reference == ref


def test_json_token_encoding_and_v2_prefix_are_settings(base: str, redis_db: redis.Redis) -> None:
    client = make_client(base, redis_db, mce_token_encoding="json", mce_api_version="v2.0")
    client.fetch_token()
    [sent] = recorded(base, "token")
    assert (sent["path"], sent["contentType"]) == ("/v2.0/oauth/token", "application/json")
    assert sent["body"] == {"client_id": CLIENT_ID, "client_secret": "***"}
    flag(base, "tx-v2")
    client.create(
        original_transaction_type=1,
        original_transaction_id="tx-v2",
        client_reference="v2-" + uuid.uuid4().hex[:8],
        key=str(uuid.uuid4()),
    )
    assert recorded(base, "create")[-1]["path"] == "/v2.0/payment/crypto/createCryptoRefund"


@pytest.mark.parametrize("participant", [None, "P-42"])
def test_participant_code_is_sent_only_when_configured(
    base: str, redis_db: redis.Redis, participant: str | None
) -> None:
    overrides = {} if participant is None else {"mce_participant_code": participant}
    client = make_client(base, redis_db, **overrides)
    flag(base, "tx-pc")
    ref = "pc-" + uuid.uuid4().hex[:8]
    created = client.create(
        original_transaction_type=1,
        original_transaction_id="tx-pc",
        client_reference=ref,
        key=str(uuid.uuid4()),
    )
    client.confirm(crypto_refund_id=created.crypto_refund_id, refund_address=None, key="c-" + ref)
    client.get(client_reference=ref)
    create_body = recorded(base, "create")[-1]["body"]
    confirm_body = recorded(base, "confirm")[-1]["body"]
    get_query = recorded(base, "get")[-1]["query"]
    if participant is None:
        assert "participantCode" not in create_body
        assert "participantCode" not in confirm_body
        assert get_query == {"clientReference": ref}
        assert created.participant_code == "P000123"  # the provider's own default
    else:
        assert create_body["participantCode"] == participant
        assert confirm_body["participantCode"] == participant
        assert get_query == {"clientReference": ref, "participantCode": participant}
        assert created.participant_code == participant


def test_amounts_as_json_numbers_are_read_exactly(base: str, redis_db: redis.Redis) -> None:
    ref = "num-" + uuid.uuid4().hex[:8]
    configure(
        base,
        amounts_as_numbers=True,
        status_info=True,
        refund_overrides={ref: {"amount": "1000.000000000000000001", "feeAmount": "0.00000021"}},
    )
    client = make_client(base, redis_db)
    flag(base, "tx-num")
    created = client.create(
        original_transaction_type=1,
        original_transaction_id="tx-num",
        client_reference=ref,
        key=str(uuid.uuid4()),
    )
    assert created.amount == Decimal("1000.000000000000000001")
    assert created.fee_amount == Decimal("0.00000021")
    assert created.status_info == "PENDING"


def test_event_store_claims_once_and_tells_duplicate_conflict_and_retry_apart(
    redis_db: redis.Redis,
) -> None:
    """The atomic store step of the webhook receiver, against a real Redis."""
    from refunds.models import now  # noqa: PLC0415
    from refunds.store.events import CLAIM_SECONDS, EventStore  # noqa: PLC0415
    from refunds.store.keys import event_key  # noqa: PLC0415

    events = EventStore(redis_db)
    body = b'{"notificationId":"n1","eventType":"crypto.refund.updated","data":{}}'
    assert events.store("n1", body, now()) == "new"
    assert events.store("n1", body, now()) == "duplicate"  # in flight: someone else applies it
    assert events.store("n1", body + b" ", now()) == "conflict"
    assert redis_db.hget(event_key("n1"), "conflicts") == "1"
    assert redis_db.hget(event_key("n1"), "body") == body.decode()  # the first body is kept
    redis_db.hset(event_key("n1"), "status", "applied")
    assert events.store("n1", body, now()) == "duplicate"
    redis_db.hset(event_key("n1"), "status", "error")
    assert events.store("n1", body, now()) == "retry"  # the earlier apply failed: this one ends it
    assert events.store("n1", body, now()) == "duplicate"
    # A claim older than CLAIM_SECONDS (a receiver that died mid-apply) is taken over.
    redis_db.hset(
        event_key("n1"), "received_at", repr(float(redis_db.time()[0]) - CLAIM_SECONDS - 5)
    )
    assert events.store("n1", body, now()) == "retry"
    assert 0 < redis_db.ttl(event_key("n1")) <= 30 * 24 * 3600
