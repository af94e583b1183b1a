"""Properties of intake validation, for any string (hypothesis):

- a value that passes intake comes back unchanged, byte for byte, from the ledger (Python
  ``submit_refund``), from HTTP (``POST`` then ``GET /refunds/{ref}`` through requests) and from
  the CLI (``refunds submit`` then ``refunds status``);
- a value that is refused is refused with its own field named, and nothing is written.

Strings are drawn half from each field's allowed alphabet and half from all of Unicode (controls,
format characters, look-alikes, surrogates excluded as JSON cannot carry them alone). A real web
app and a private Redis; the CLI runs as a subprocess (fewer examples: each is two processes).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import load_settings
from devstack.localstack import Child, free_port, start_redis, start_web, wait_until
from refunds.errors import InvalidIntentError
from refunds.identifiers import REFERENCE_PUNCTUATION, TRANSACTION_ID_PUNCTUATION
from refunds.models import RefundIntent
from refunds.producer import Producer, submit_refund
from refunds.store.ledger import Ledger
from tests.integration.test_cli import base_env, run

KEY = "test-api-key-prop-31c7"
FIELDS = ("clientReference", "originalTransactionId", "refundAddress")
PROPERTY = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
CLI_PROPERTY = settings(
    max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=70)
ALPHABET = {
    "clientReference": string.ascii_letters + string.digits + REFERENCE_PUNCTUATION,
    "originalTransactionId": string.ascii_letters + string.digits + TRANSACTION_ID_PUNCTUATION,
    "refundAddress": "".join(c for c in string.printable if not c.isspace()),
}


def values(field: str) -> st.SearchStrategy[str]:
    return st.one_of(st.text(ALPHABET[field], min_size=1, max_size=70), ANY_TEXT)


@dataclass
class Stack:
    url: str
    redis_url: str
    ledger: Ledger
    producer: Producer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("intake-properties")
    redis_child, redis_url = start_redis(workdir / "redis", appendonly=False)
    env = {"REFUNDS_PROFILE": "sandbox", "REDIS_URL": redis_url, "REFUNDS_API_KEY": KEY}
    port = free_port()
    web = start_web(workdir / "logs", env, port=port)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url + "/healthz", timeout=1).ok, 30, "web", web)
    settings_ = load_settings(profile="sandbox", redis_url=redis_url)
    yield Stack(url, redis_url, Ledger.from_url(redis_url), Producer(settings_))
    child: Child
    for child in (web, redis_child):
        child.stop()


def intent_with(field: str, value: str, channel: str) -> dict[str, Any]:
    """An intent whose ``field`` is ``value`` and whose other fields are valid and derived from
    it (the same value twice is the same intent; two values never share a reference or a
    payment)."""
    # A reference or a payment id under test names the same intent on every channel (else a
    # value met twice would be a conflict, not a round trip).
    scope = channel if field == "refundAddress" else "id"
    tag = hashlib.sha256(f"{scope}|{field}|{value}".encode()).hexdigest()[:20]
    data: dict[str, Any] = {
        "originalTransactionType": 1,
        "originalTransactionId": f"tx-{tag}",
        "clientReference": f"{scope}-{tag}",
    }
    data[field] = value
    return data


def accepted(data: dict[str, Any]) -> RefundIntent | None:
    try:
        return RefundIntent.parse(data)
    except InvalidIntentError:
        return None


def assert_only_field_named(errors: list[Any], field: str) -> None:
    assert errors, "a refusal lists its errors"
    assert {e["field"] if isinstance(e, dict) else e.field for e in errors} == {field}


@pytest.mark.parametrize("field", FIELDS)
def test_ledger_keeps_what_intake_accepts_and_refusals_name_the_field(
    stack: Stack, field: str
) -> None:
    @given(value=values(field))
    @PROPERTY
    def check(value: str) -> None:
        data = intent_with(field, value, "py")
        try:
            record = submit_refund(
                original_transaction_type=data["originalTransactionType"],
                original_transaction_id=data["originalTransactionId"],
                client_reference=data["clientReference"],
                refund_address=data.get("refundAddress"),
                producer=stack.producer,
            )
        except InvalidIntentError as exc:
            assert_only_field_named(exc.errors, field)
            if field != "clientReference":
                assert stack.ledger.find(data["clientReference"]) is None
            return
        public = stack.ledger.get(record.client_reference).to_public()
        expected = value or None if field == "refundAddress" else value  # "" is no address
        assert public[field] == expected

    check()


@pytest.mark.parametrize("field", FIELDS)
def test_http_round_trips_what_intake_accepts_and_refusals_name_the_field(
    stack: Stack, field: str
) -> None:
    http = requests.Session()
    http.headers["X-API-Key"] = KEY

    @given(value=values(field))
    @PROPERTY
    def check(value: str) -> None:
        data = intent_with(field, value, "http")
        answer = http.post(stack.url + "/refunds", json=data, timeout=10)
        if accepted(data) is None:
            assert answer.status_code == 422, answer.text
            assert_only_field_named(answer.json()["errors"], field)
            return
        assert answer.status_code in (200, 201), answer.text
        ref = data["clientReference"]
        read = http.get(f"{stack.url}/refunds/{quote(ref, safe='')}", timeout=10)
        assert read.status_code == 200, read.text
        expected = value or None if field == "refundAddress" else value
        assert answer.json()[field] == read.json()[field] == expected

    check()


@pytest.mark.parametrize("field", ["clientReference", "originalTransactionId"])
def test_cli_round_trips_what_intake_accepts_and_refusals_name_the_field(
    stack: Stack, field: str, tmp_path: Path
) -> None:
    env = {**base_env(), "REDIS_URL": stack.redis_url, "REFUNDS_PROFILE": "sandbox"}
    flag = {"clientReference": "--ref", "originalTransactionId": "--txn-id"}[field]

    @given(value=values(field).filter(lambda v: "\x00" not in v))  # argv cannot hold NUL
    @CLI_PROPERTY
    def check(value: str) -> None:
        data = intent_with(field, value, "cli")
        args = ["submit", "--type", "1", "--txn-id", data["originalTransactionId"],
                "--ref", data["clientReference"], "--json"]
        result = run(env, *args)
        if accepted(data) is None:
            assert result.returncode == 2, result.stderr
            assert result.stderr.splitlines()[0].startswith(f"{field} ({flag}): ")
            return
        assert result.returncode == 0, result.stderr
        status = run(env, "status", data["clientReference"], "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(result.stdout)[field] == json.loads(status.stdout)[field] == value

    check()
