"""Benchmark: the SQL archive (issue 19). Measures, asserts nothing.

``python -m bench.archive [--refunds N] [--pg URL]``

A private redis-server (no AOF) and the real store scripts: N refunds are submitted and moved
through a provider-like path to ``completed`` with ``Ledger.transition`` (one queue entry per
write, as the pipeline writes them: received, creating, created, confirming, processing,
completed, with the provider fields a Get records). Then:

1. Redis ``used_memory`` per final refund while hot (queue drained), and after hot retention (the
   record, history, index entries gone; one tombstone member each in ``rp:gone``). The archive
   look-up alternative (no tombstone) is measured by removing ``rp:gone`` afterwards.
2. Archiver throughput: the same queue drained into an SQLite file and into PostgreSQL (a
   database created and dropped here), batches of ``REFUNDS_ARCHIVE_BATCH`` (500), as rows and
   queue entries per second.

Webhook events (``rp:wh:*``) are not written here; they keep their own 30-day expiry.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from devstack.processes import start_redis
from refunds.archive.archiver import drain
from refunds.archive.db import engine_for, upgrade
from refunds.archive.models import ArchivedRefund, RefundEvent
from refunds.archive.reads import ArchiveReader, Refunds
from refunds.archive.retention import evict_expired
from refunds.models import RefundIntent, State
from refunds.store.archive_queue import ArchiveQueue
from refunds.store.keys import ARCHIVE_QUEUE, ARCHIVED_REFS
from refunds.store.ledger import Ledger

PATH: list[tuple[State, dict[str, Any]]] = [
    (State.CREATING, {"attempts": 1}),
    (
        State.CREATED,
        {
            "crypto_refund_id": "",
            "provider_status": 0,
            "amount": Decimal("123.456789"),
            "currency": "USDT",
            "blockchain": "TRX",
            "participant_code": "PTEST0001",
            "provider_seen_at": 0.0,
        },
    ),
    (State.CONFIRMING, {"attempts": 1}),
    (State.PROCESSING, {"provider_status": 1}),
    (
        State.COMPLETED,
        {
            "provider_status": 2,
            "txn_hash": "0x" + "ab" * 32,
            "fee_amount": Decimal("1.5"),
            "fee_currency": "USDT",
        },
    ),
]


def _used(ledger: Ledger) -> int:
    return int(ledger.redis.info("memory")["used_memory"])


def make_final(ledger: Ledger, n: int, prefix: str) -> list[str]:
    refs = [f"{prefix}{i:07d}" for i in range(n)]
    for start in range(0, n, 1000):
        intents = [
            RefundIntent.model_validate(
                {
                    "originalTransactionType": 1,
                    "originalTransactionId": f"tx-{r}",
                    "clientReference": r,
                    "refundAddress": "TQn9Y2khEsLJW1ChVWFMSMeRDow5KcbLSE",
                }
            )
            for r in refs[start : start + 1000]
        ]
        ledger.submit_many(intents, due_in=3600)
    for ref in refs:
        record = ledger.get(ref)
        for target, fields in PATH:
            f = dict(fields)
            if "crypto_refund_id" in f:
                f["crypto_refund_id"] = uuid.uuid5(uuid.NAMESPACE_URL, ref).hex
                f["provider_seen_at"] = time.time()
            record = ledger.transition(record, target, f"bench {target}", fields=f)
    return refs


def _drain_all(queue: ArchiveQueue, url: str) -> tuple[float, int]:
    engine = engine_for(url)
    entries = 0
    started = time.perf_counter()
    while True:
        done = drain(queue, engine, batch_size=500, budget_seconds=3600)
        entries += done.entries
        if done.entries == 0:
            break
    took = time.perf_counter() - started
    return took, entries


def _rows(url: str) -> int:
    with engine_for(url).connect() as conn:
        events = conn.execute(select(func.count()).select_from(RefundEvent)).scalar_one()
        snaps = conn.execute(select(func.count()).select_from(ArchivedRefund)).scalar_one()
    return int(events) + int(snaps)


def _copy_queue(queue: ArchiveQueue) -> list[tuple[str, dict[str, str]]]:
    return [(e.id, e.fields) for e in queue.read(10**9)]


def _refill(ledger: Ledger, entries: list[tuple[str, dict[str, str]]]) -> None:
    pipe = ledger.redis.pipeline(transaction=False)
    for _, fields in entries:
        pipe.xadd(ARCHIVE_QUEUE, fields)  # type: ignore[arg-type]
    pipe.execute()


def _archived_reads(ledger: Ledger, url: str, refs: list[str], name: str) -> None:
    """p50/p99 of one archived refund read through ``Refunds.get`` (Redis miss, tombstone,
    SQL), in process: the part of ``GET /refunds/{ref}`` the archive adds."""
    reads = Refunds(ledger, ArchiveReader(engine_for(url)))
    took = []
    for ref in refs[: min(len(refs), 2000)]:
        started = time.perf_counter()
        reads.get(ref)
        took.append(time.perf_counter() - started)
    took.sort()
    p50, p99 = took[len(took) // 2], took[int(len(took) * 0.99)]
    print(f"archived read ({name}): p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")


def _postgres(
    admin_url: str, ledger: Ledger, entries: list[tuple[str, dict[str, str]]], refs: list[str]
) -> None:
    """The same queue drained into a PostgreSQL database created (and dropped) here."""
    queue = ArchiveQueue(ledger.redis)
    name = f"bench_archive_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    pg_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(pg_url)
        _refill(ledger, entries)
        took, drained = _drain_all(queue, pg_url)
        rows = _rows(pg_url)
        print(
            f"archiver postgresql: {drained} entries, {rows} rows in {took:.2f}s = "
            f"{rows / took:.0f} rows/s, {drained / took:.0f} entries/s"
        )
        with engine_for(pg_url).begin() as conn:
            conn.execute(text("UPDATE refunds SET evicted_at = now()"))
        ledger.redis.sadd(ARCHIVED_REFS, *refs)
        _archived_reads(ledger, pg_url, refs, "postgresql")
    finally:
        engine_for(pg_url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.archive")
    parser.add_argument("--refunds", type=int, default=5000)
    parser.add_argument(
        "--pg",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="an admin URL of a PostgreSQL server ('' to skip)",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    child, url = start_redis(work / "redis", appendonly=False)
    try:
        ledger = Ledger.from_url(url)
        queue = ArchiveQueue(ledger.redis)
        n = args.refunds
        base = _used(ledger)
        refs = make_final(ledger, n, "b-")
        entries = _copy_queue(queue)
        sqlite_url = f"sqlite:///{work / 'archive.db'}"
        upgrade(sqlite_url)
        took, drained = _drain_all(queue, sqlite_url)
        rows = _rows(sqlite_url)
        print(f"refunds: {n}, queue entries: {len(entries)} ({len(entries) / n:.1f} per refund)")
        print(
            f"archiver sqlite: {drained} entries, {rows} rows in {took:.2f}s = "
            f"{rows / took:.0f} rows/s, {drained / took:.0f} entries/s"
        )
        hot = _used(ledger)
        print(f"redis bytes per final refund, hot (queue drained): {(hot - base) / n:.0f}")
        result = evict_expired(queue, engine_for(sqlite_url), retention=0, limit=n)
        at_once = _used(ledger)
        time.sleep(3.0)  # Redis shrinks its keyspace table in its cron, not at DEL
        after = _used(ledger)
        print(f"evicted: {result.evicted}, kept: {result.kept}")
        print(
            f"redis bytes per final refund after retention, tombstone: {(after - base) / n:.1f} "
            f"(right after the evictions: {(at_once - base) / n:.1f})"
        )
        _archived_reads(ledger, sqlite_url, refs, "sqlite")
        tomb = int(ledger.redis.memory_usage(ARCHIVED_REFS) or 0)
        print(f"  (MEMORY USAGE rp:gone: {tomb} bytes = {tomb / n:.1f} per refund)")
        ledger.redis.delete(ARCHIVED_REFS)
        lookup = _used(ledger)
        print(
            f"redis bytes per final refund after retention, archive look-up: "
            f"{(lookup - base) / n:.1f}"
        )
        if args.pg:
            _postgres(args.pg, ledger, entries, refs)
    finally:
        child.stop()


if __name__ == "__main__":
    main()
