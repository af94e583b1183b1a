"""The payment index for records kept from before it existed: ``refunds index-payments``.

Intake writes ``rp:pay:{type}:{txnId}`` with every new record (the intake script,
``store/lua/ledger_submit.lua``), so one original payment is refunded under one reference. Records
submitted by an earlier release have no entry: until it is written, a second reference for such a
payment is not caught. This fills the index from the records (SET NX, so a reference that holds it
already keeps it, and running it twice changes nothing), oldest first, skipping cancelled refunds (a
cancelled one leaves its payment free), and reports the payments that two references already share,
for a human to look at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import redis

from refunds.store.keys import ALL, payment_key, record_key


@dataclass
class IndexReport:
    indexed: int = 0  # entries written now
    present: int = 0  # records whose payment already named them
    shared: dict[str, list[str]] = field(default_factory=dict)  # "type/txn" -> references


def index_payments(client: redis.Redis, chunk: int = 1000) -> IndexReport:
    """Write the payment index entry of every non-cancelled record that has none."""
    report = IndexReport()
    start = 0
    while True:
        refs = cast(list[str], client.zrange(ALL, start, start + chunk - 1))
        if not refs:
            return report
        pipe = client.pipeline(transaction=False)
        for ref in refs:
            pipe.hmget(record_key(ref), "type", "txn", "state")
        rows = cast(list[list[Any]], pipe.execute())
        wanted = [
            (ref, payment_key(int(kind), str(txn)), f"{kind}/{txn}")
            for ref, (kind, txn, state) in zip(refs, rows, strict=True)
            if kind is not None and txn is not None and state != "cancelled"
        ]
        for ref, key, _ in wanted:
            pipe.set(key, ref, nx=True)
            pipe.get(key)
        answers = pipe.execute()
        for n, (ref, _, payment) in enumerate(wanted):
            written, holder = answers[2 * n], answers[2 * n + 1]
            if written:
                report.indexed += 1
            elif holder == ref:
                report.present += 1
            else:
                report.shared.setdefault(payment, [str(holder)]).append(ref)
        start += chunk
