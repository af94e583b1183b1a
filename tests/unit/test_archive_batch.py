"""How the archiver turns queue entries into rows (pure logic; the drain itself is tested with a
real Redis and real databases in tests/integration/test_archive.py)."""

from __future__ import annotations

import json
from decimal import Decimal

from refunds.archive.archiver import Batch
from refunds.archive.reads import RefundFilter
from refunds.models import RefundRecord, State
from refunds.store.archive_queue import Entry


def _line(at: float, frm: str | None, to: str, actor: str | None = None) -> str:
    entry: dict[str, object] = {"at": at, "from": frm, "to": to, "reason": f"to {to}"}
    if actor:
        entry["actor"] = actor
    return json.dumps(entry)


def _record_entry(entry_id: str, ref: str, ver: int, lines: list[str], **fields: str) -> Entry:
    rec = {"state": "received", "created": "100.0", "updated": "100.0", "fp": "f" * 64}
    rec |= {"ver": str(ver), "lk": "lease-token", "lku": "1.0", **fields}
    return Entry(
        entry_id, {"k": "r", "ref": ref, "v": str(ver), "h": "\n".join(lines), "r": json.dumps(rec)}
    )


def test_each_history_line_of_a_write_gets_its_own_version_ending_at_the_record_version() -> None:
    lines = [_line(101.0, "created", "confirming"), _line(101.0, "confirming", "processing")]
    batch = Batch.of([_record_entry("1000-0", "r1", 7, lines, state="processing")])
    assert [(e["version"], e["to_state"]) for e in batch.events] == [
        (6, "confirming"),
        (7, "processing"),
    ]
    assert batch.events[0]["actor"] == "pipeline"


def test_a_write_without_history_archives_the_snapshot_and_no_event() -> None:
    batch = Batch.of([_record_entry("1000-0", "r1", 3, [], state="created")])
    assert batch.events == []
    assert batch.snapshots["r1"]["version"] == 3


def test_the_snapshot_keeps_the_highest_version_and_the_first_final_time() -> None:
    final = _line(105.0, "processing", "completed", actor="ann")
    batch = Batch.of(
        [
            _record_entry("1-0", "r1", 5, [final], state="completed", amount="1.5", cur="USDT"),
            _record_entry("2-0", "r1", 6, [], state="completed", amount="1.5", cur="USDT"),
            _record_entry("3-0", "r2", 1, [_line(100.0, None, "received")]),
        ]
    )
    snap = batch.snapshots["r1"]
    assert snap["version"] == 6
    assert snap["final_at"] is not None and snap["final_at"].timestamp() == 105.0
    assert snap["amount"] == Decimal("1.5")
    assert "lk" not in json.loads(snap["record"])  # a step's lease is not part of the record
    assert batch.events[0]["actor"] == "ann"
    assert batch.snapshots["r2"]["final_at"] is None


def test_webhooks_and_notification_outcomes_are_sorted_into_their_tables() -> None:
    batch = Batch.of(
        [
            Entry("5-0", {"k": "w", "nid": "n1", "body": "{}", "hash": "h", "at": "100.5"}),
            Entry("6-0", {"k": "s", "nid": "n1", "status": "applied", "ref": "r1"}),
            Entry("7-0", {"k": "n", "m": "http:r1", "o": "failed", "a": "2", "e": "boom"}),
            Entry("8-0", {"k": "?"}),
        ]
    )
    assert batch.webhooks[0]["verification"] == "verified"
    assert batch.webhook_outcomes == [{"k": "s", "nid": "n1", "status": "applied", "ref": "r1"}]
    n = batch.notifications[0]
    assert (n["channel"], n["reference"], n["outcome"]) == ("http", "r1", "failed")
    assert n["attempts"] == 2


def _rec(amount: str | None, currency: str | None) -> RefundRecord:
    return RefundRecord(
        client_reference="r",
        state=State.COMPLETED,
        original_transaction_type=1,
        original_transaction_id="t",
        refund_address=None,
        fingerprint="f",
        created_at=100.0,
        updated_at=100.0,
        version=1,
        amount=Decimal(amount) if amount else None,
        currency=currency,
    )


def test_filter_window_is_half_open_and_amounts_inclusive() -> None:
    wanted = RefundFilter(created_from=100.0, created_to=200.0, amount_min=Decimal("1"))
    assert wanted.keeps_time(100.0) and not wanted.keeps_time(200.0)
    assert wanted.keeps(_rec("1", "USDT"))
    assert not wanted.keeps(_rec("0.999999999999999999", "USDT"))
    assert not wanted.keeps(_rec(None, None))
    assert not RefundFilter(currency="USDC").keeps(_rec("5", "USDT"))
