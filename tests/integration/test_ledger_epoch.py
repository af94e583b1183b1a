"""The ledger's epoch (``refunds.store.epoch``) between processes, on a real Redis database: each
watch stands for one process (its own client), as the web app, a worker, beat and the CLI hold."""

from __future__ import annotations

import logging

import pytest
import redis

from refunds.errors import LedgerResetError, NoResetToAcknowledgeError
from refunds.store import epoch as epochs
from refunds.store.keys import EPOCH, EPOCH_LOST


def process(url: str, name: str) -> epochs.EpochWatch:
    """A watch that reads Redis on every check (no interval), with a client of its own."""
    return epochs.EpochWatch(redis.Redis.from_url(url, decode_responses=True), name, interval=0)


def test_the_first_process_writes_the_epoch_and_the_others_adopt_it(redis_db: str) -> None:
    web, worker = process(redis_db, "web"), process(redis_db, "worker")
    assert web.check() is None and worker.check() is None
    assert web.known is not None and web.known == worker.known
    current, lost = epochs.read(web.client)
    assert current is not None and (current.origin, current.by) == ("start", "web")
    assert lost is None


def test_an_empty_restart_is_recorded_once_and_seen_by_every_process(
    redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    web, worker = process(redis_db, "web"), process(redis_db, "worker")
    web.check()
    worker.check()
    web.client.flushdb()  # what a restart without persistence leaves
    with caplog.at_level(logging.ERROR, logger="refunds.store.epoch"):
        for _ in range(3):
            found = web.check()
    assert found is not None and found.by == "web" and found.found == ""
    assert len([r for r in caplog.records if "lost the ledger" in r.getMessage()]) == 1
    # A fresh process (the health probe, the CLI) knows nothing, but reads the recorded loss.
    fresh = process(redis_db, "cli")
    assert fresh.check() == found
    assert worker.check() == found  # the first detector's account is kept
    with pytest.raises(LedgerResetError, match="refunds redis ack-reset"):
        fresh.require_intact()


def test_an_epoch_written_by_a_newcomer_after_a_wipe_is_a_loss_too(redis_db: str) -> None:
    """A process that starts on the empty Redis first writes a new epoch; one that knew the old
    one still sees the loss (an epoch no operator wrote replaced its own)."""
    old = process(redis_db, "worker")
    old.check()
    old.client.flushdb()
    newcomer = process(redis_db, "web")
    assert newcomer.check() is None  # a first start, as far as it can tell
    found = old.check()
    assert found is not None and found.found == newcomer.known
    assert newcomer.check() == found  # and now the newcomer is red too


def test_an_operators_acknowledgement_clears_the_loss_everywhere(redis_db: str) -> None:
    web, beat = process(redis_db, "web"), process(redis_db, "beat")
    web.check()
    beat.check()
    client = web.client
    with pytest.raises(NoResetToAcknowledgeError):
        epochs.acknowledge(client, reason="nothing happened", by="ann")  # an intact epoch stays
    client.flushdb()
    assert web.check() is not None
    new = epochs.acknowledge(client, reason="refunds re-read from MCE", by="ann")
    assert (new.origin, new.by, new.reason) == ("ack", "ann", "refunds re-read from MCE")
    assert client.exists(EPOCH_LOST) == 0
    assert web.check() is None and beat.check() is None
    assert web.known == beat.known == new.id
    client.delete(EPOCH)  # and a second loss after it is detected again
    assert web.check() is not None


def test_a_watch_reads_redis_at_most_once_per_interval(redis_db: str) -> None:
    now = [100.0]
    watch = epochs.EpochWatch(
        redis.Redis.from_url(redis_db, decode_responses=True),
        "web",
        interval=1.0,
        clock=lambda: now[0],
    )
    watch.check()
    watch.client.flushdb()
    assert watch.check() is None  # within the interval: the last answer
    now[0] += 1.0
    assert watch.check() is not None
