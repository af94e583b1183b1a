"""Hostile identifiers and refund addresses get a clear no at every intake, with the field named:
``POST /refunds`` on a real web app, ``refunds submit`` (one intent, and a CSV batch: exit 2, the
line named, nothing written). What is accepted reads back through a standard HTTP client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import requests

from devstack.localstack import Child
from refunds.addresses import eip55
from refunds.store.keys import ALL, payment_key, record_key
from tests.integration.test_cli import assert_no_traceback, record_keys, run, run_json
from tests.integration.test_cli_batch import cli_redis, db, env  # noqa: F401 - fixtures
from tests.integration.test_web_intake import JSON, KEY, Api, _start

TRON = "T9yED5xMV5ARV98BexN97aLZ1UUq7eKSxm"  # base58check of 0x41 and 20 bytes
EVM = eip55("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
BTC_BECH32 = "bc1qqqqsyqcyq5rqwzqfpg9scrgwpugpzysn4v0345"

#: (value, what the refusal must say): originalTransactionId values from the issue.
BAD_TRANSACTION_IDS = [
    ("tx-\u200b1001", "U+200B ZERO WIDTH SPACE at position 4"),
    ("tx-\x001001", "U+0000 NULL at position 4"),
    ("tx-1001\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE at position 8"),
    ("tx-10\n01", "U+000A LINE FEED at position 6"),
    ("\u0422\u0425-1001", "U+0422 CYRILLIC CAPITAL LETTER TE at position 1"),
]
BAD_REFERENCES = [
    (".", "'.' is not a reference"),
    ("..", "'..' is not a reference"),
    ("ref/1", "U+002F SOLIDUS at position 4"),
    ("ref\u200b", "U+200B ZERO WIDTH SPACE at position 4"),
]
#: Refund addresses from the issue (each refused at intake; the chain is not known yet).
BAD_ADDRESSES = [
    (TRON + "\u200b", f"U+200B ZERO WIDTH SPACE at position {len(TRON) + 1}"),
    ("\ufeff" + TRON, "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1"),
    (TRON[:10] + " " + TRON[10:], "U+0020 SPACE at position 11"),
    ("\u200b\u200b", "U+200B ZERO WIDTH SPACE at position 1"),
    (EVM + "\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE at position 43"),
    (EVM[:-2] + "\uff11\uff12", "U+FF11 FULLWIDTH DIGIT ONE at position 41"),
    (EVM[:-1] + EVM[-1].swapcase(), "does not match its EIP-55 checksum"),
    (BTC_BECH32[:10] + BTC_BECH32[10:].upper(), "mixed case is invalid (BIP-173)"),
    ("not an address!", "U+0020 SPACE at position 4"),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    started, children = _start(tmp_path_factory.mktemp("web-identifiers"))
    yield started
    child: Child
    for child in children:
        child.stop()


def body(ref: str, txn: str | None = None, address: str | None = None) -> bytes:
    data = {"originalTransactionType": 1, "originalTransactionId": txn or f"tx-{ref}",
            "clientReference": ref}
    if address is not None:
        data["refundAddress"] = address
    return json.dumps(data).encode()


def refused(answer: requests.Response, field: str) -> str:
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["errors"]
    assert error["field"] == field
    return str(error["message"])


# --- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("txn", "said"), BAD_TRANSACTION_IDS)
def test_http_refuses_a_bad_transaction_id_naming_field_and_character(
    api: Api, prefix: str, txn: str, said: str
) -> None:
    ref = prefix + "txn"
    message = refused(api.post("/refunds", body(ref, txn), JSON), "originalTransactionId")
    assert message.startswith(said + " is not allowed")
    assert api.ledger.find(ref) is None


@pytest.mark.parametrize(("ref", "said"), BAD_REFERENCES)
def test_http_refuses_a_bad_reference(api: Api, ref: str, said: str) -> None:
    message = refused(api.post("/refunds", body(ref, "tx-ref-check"), JSON), "clientReference")
    assert message.startswith(said)
    assert api.ledger.find(ref) is None


@pytest.mark.parametrize(("address", "said"), BAD_ADDRESSES)
def test_http_refuses_a_bad_refund_address(
    api: Api, prefix: str, address: str, said: str
) -> None:
    ref = prefix + "addr"
    assert said in refused(api.post("/refunds", body(ref, address=address), JSON), "refundAddress")
    assert api.ledger.find(ref) is None


@pytest.mark.parametrize("special", ["-", "_", ".", ":", "@", "+", "="])
def test_every_allowed_reference_character_reads_back_through_requests(
    api: Api, prefix: str, special: str
) -> None:
    ref = f"{prefix}a{special}b{special}"
    txn = f"tx/{special}#1"  # "/" and "#" are allowed in a transaction id, not in a reference
    assert api.post("/refunds", body(ref, txn), JSON).status_code == 201
    answer = api.http.get(f"{api.url}/refunds/{quote(ref, safe='')}", headers={"X-API-Key": KEY})
    assert answer.status_code == 200, answer.text
    assert answer.json()["clientReference"] == ref
    assert answer.json()["originalTransactionId"] == txn
    # Unquoted too: none of the characters means anything in a URL path.
    plain = api.http.get(f"{api.url}/refunds/{ref}", headers={"X-API-Key": KEY})
    assert plain.json()["clientReference"] == ref


def test_three_dots_is_a_reference_that_reads_back(api: Api) -> None:
    assert api.post("/refunds", body("...", "tx-three-dots"), JSON).status_code in (200, 201)
    answer = api.http.get(f"{api.url}/refunds/...", headers={"X-API-Key": KEY})
    assert answer.status_code == 200 and answer.json()["clientReference"] == "..."


def test_a_second_reference_for_one_payment_is_a_409_naming_the_first(
    api: Api, prefix: str
) -> None:
    txn = f"tx-{prefix}ORDER-7"
    assert api.post("/refunds", body(prefix + "ORDER-7", txn), JSON).status_code == 201
    second = api.post("/refunds", body(prefix + "order-7", txn), JSON)
    assert second.status_code == 409
    assert f"already refunded under clientReference '{prefix}ORDER-7'" in second.json()["detail"]
    assert second.json()["errors"] == [
        {
            "field": "originalTransactionId",
            "message": f"already refunded under clientReference '{prefix}ORDER-7'",
        }
    ]
    assert api.ledger.find(prefix + "order-7") is None


def test_a_lower_case_resubmission_of_an_eip55_address_is_the_same_intent(
    api: Api, prefix: str
) -> None:
    ref = prefix + "evm"
    first = api.post("/refunds", body(ref, address=EVM), JSON)
    assert first.status_code == 201
    again = api.post("/refunds", body(ref, address=EVM.lower()), JSON)
    assert again.status_code == 200, again.text
    assert again.json()["refundAddress"] == EVM  # the merchant's first spelling, exactly
    other = api.post("/refunds", body(ref, address="0x" + "2" * 40), JSON)
    assert other.status_code == 409


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_single_submit_refunds_a_bad_transaction_id_with_its_flag(
    env: dict[str, str], db: redis.Redis  # noqa: F811 - fixtures
) -> None:
    result = run(env, "submit", "--type", "1", "--txn-id", "tx-\u200b1", "--ref", "cli-1")
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr.splitlines()[0].startswith(
        "originalTransactionId (--txn-id): U+200B ZERO WIDTH SPACE at position 4 is not allowed"
    )
    address = run(env, "submit", "--type", "1", "--txn-id", "tx-2", "--ref", "cli-2",
                  "--address", TRON + "\u200b")
    assert address.returncode == 2
    assert "refundAddress (--address): U+200B ZERO WIDTH SPACE" in address.stderr
    assert record_keys(db) == []


def test_a_csv_batch_with_bad_identifiers_and_addresses_names_every_line_and_writes_nothing(
    env: dict[str, str], db: redis.Redis, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    rows = [("1", "tx-ok", "ok-1", "")]
    rows += [("1", txn, f"t-{n}", "") for n, (txn, _) in enumerate(BAD_TRANSACTION_IDS)]
    rows += [("1", f"tx-r{n}", ref, "") for n, (ref, _) in enumerate(BAD_REFERENCES)]
    rows += [("1", f"tx-a{n}", f"a-{n}", addr) for n, (addr, _) in enumerate(BAD_ADDRESSES)]
    batch = tmp_path / "hostile.jsonl"
    # JSONL: one line per row whatever the row holds (a CSV cell may hold a newline).
    batch.write_text(
        "".join(
            json.dumps({"originalTransactionType": int(t), "originalTransactionId": txn,
                        "clientReference": ref, **({"refundAddress": a} if a else {})}) + "\n"
            for t, txn, ref, a in rows
        ),
        encoding="utf-8",
    )
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 2
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    expected = (
        [("originalTransactionId", said) for _, said in BAD_TRANSACTION_IDS]
        + [("clientReference", said) for _, said in BAD_REFERENCES]
        + [("refundAddress", said) for _, said in BAD_ADDRESSES]
    )
    assert len(lines) == len(expected) + 1
    for number, (line, (field, said)) in enumerate(zip(lines, expected, strict=False), start=2):
        assert line.startswith(f"line {number}: {field}: "), line
        assert said in line, line
    assert lines[-1] == f"refunds: {batch}: {len(expected)} problems; nothing was submitted"
    assert record_keys(db) == []


def test_a_csv_file_names_the_line_of_an_invisible_character(
    env: dict[str, str], db: redis.Redis, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    batch = tmp_path / "export.csv"
    batch.write_text(
        "originalTransactionType,originalTransactionId,clientReference,refundAddress\n"
        f"1,tx-1,ok-1,{TRON}\n"
        f"1,tx-\u200b2,ok-2,\n"
        f"1,tx-3,ok-3,{TRON}\u200b\n"
        f"1,tx-4,ok-4,\"{EVM}\u202e\"\n",
        encoding="utf-8",
    )
    result = run(env, "submit", "--file", str(batch))
    assert result.returncode == 2
    assert result.stderr.splitlines()[:3] == [
        "line 3: originalTransactionId: U+200B ZERO WIDTH SPACE at position 4 is not allowed, an "
        "invisible format character (allowed: ASCII letters, digits and - _ . : / @ # + =)",
        "line 4: refundAddress: U+200B ZERO WIDTH SPACE at position 35 is not allowed, an "
        "invisible format character (allowed: printable ASCII without spaces)",
        "line 5: refundAddress: U+202E RIGHT-TO-LEFT OVERRIDE at position 43 is not allowed, an "
        "invisible format character (allowed: printable ASCII without spaces)",
    ]
    assert record_keys(db) == []


def test_a_batch_refunding_one_payment_under_two_references_reports_the_conflict(
    env: dict[str, str], db: redis.Redis, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    batch = tmp_path / "twice.jsonl"
    batch.write_text(
        "".join(
            json.dumps({"originalTransactionType": 1, "originalTransactionId": "tx-7",
                        "clientReference": ref}) + "\n"
            for ref in ("ORDER-7", "order-7")
        )
    )
    result = run(env, "submit", "--file", str(batch), "--json")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["created"] == 1
    assert summary["conflicts"] == [
        {"clientReference": "order-7", "differences": ["originalTransactionId"],
         "existingReference": "ORDER-7"}
    ]
    assert record_keys(db) == [record_key("ORDER-7")]
    assert run_json(env, "status", "ORDER-7")["originalTransactionId"] == "tx-7"


def test_index_payments_covers_records_from_before_the_index_and_lists_shared_payments(
    env: dict[str, str], db: redis.Redis, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    for ref, txn in (("old-1", "tx-old"), ("old-2", "tx-old"), ("old-3", "tx-3")):
        assert run(env, "submit", "--type", "1", "--txn-id", txn, "--ref", ref).returncode in (0, 1)
    # As an earlier release left them: records, no index entries, and one payment twice.
    db.delete(payment_key(1, "tx-old"), payment_key(1, "tx-3"))
    first = {"type": "1", "txn": "tx-old"}
    db.hset(record_key("old-2"), mapping=first)  # old-2 was refused above: make it as it was
    db.zadd(ALL, {"old-2": 9e9})
    result = run(env, "index-payments", "--json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout) == {
        "indexed": 2, "present": 0, "shared": {"1/tx-old": ["old-1", "old-2"]},
    }
    again = run(env, "index-payments", "--json")
    assert json.loads(again.stdout)["present"] == 3 - 1  # old-2 is still not the holder
    # Now a new reference for an old payment is refused, naming the first.
    late = run(env, "submit", "--type", "1", "--txn-id", "tx-3", "--ref", "new-3")
    assert late.returncode == 1 and "already refunded under clientReference 'old-3'" in late.stderr
