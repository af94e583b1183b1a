"""A publish that fails after the intent was stored: answered with the record, due in seconds.

The producer's ledger Redis works, its broker is a closed port: ``submit`` must answer the created
record, raise nothing, log a WARNING with the reference, and leave the refund's timer due within
a few seconds; then a real worker and beat on the working Redis finish the refund. A private
redis-server per module keeps the timer assertions free of any other test's beat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings, load_settings
from devstack.localstack import (
    Child,
    free_port,
    start_beat,
    start_redis,
    start_worker,
    wait_for_worker,
)
from refunds.models import State, now
from refunds.producer import Producer, safety_net_seconds
from refunds.store.ledger import Ledger
from tests.conftest import TEST_ENV, SandboxAdmin, wait_final


def _settings(redis_url: str, base_url: str) -> Settings:
    return load_settings(
        **{
            key.removeprefix("REFUNDS_").lower(): value
            for key, value in TEST_ENV.items()
            if key.startswith("REFUNDS_")
        },
        redis_url=redis_url,
        mce_base_url=base_url,
    )


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    child, url = start_redis(tmp_path_factory.mktemp("intake-redis"))
    yield url
    child.stop()


def test_publish_failure_after_the_durable_submit(
    *,
    private_redis: str,
    env: dict[str, str],
    sandbox: SandboxAdmin,
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger.from_url(private_redis)
    good = _settings(private_redis, env["MCE_BASE_URL"])
    dead_broker = good.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    producer = Producer(dead_broker, ledger=ledger)
    ref = f"{prefix}pub"
    sandbox.flag([f"{ref}-tx"], outcome="completed")
    intent = {
        "originalTransactionType": 1,
        "originalTransactionId": f"{ref}-tx",
        "clientReference": ref,
    }

    caplog.set_level(logging.WARNING, logger="refunds.producer")
    started = time.monotonic()
    result = producer.submit_intent(intent)  # must not raise
    assert time.monotonic() - started < 15
    assert result.created
    assert result.record.client_reference == ref
    assert result.record.state == State.RECEIVED
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "the failed publish was not logged"
    assert getattr(warnings[0], "client_reference", None) == ref
    due = ledger.due_at(ref)
    assert due is not None
    assert due - now() <= 0.5  # brought due at once, not a lease (12 s here) out

    # The same intent again (the merchant retries): the same record, not created, nudged again.
    caplog.clear()
    again = producer.submit_intent(intent)
    assert not again.created
    assert again.record.client_reference == ref
    assert [r for r in caplog.records if getattr(r, "client_reference", None) == ref]

    # A real worker and beat on the working Redis finish it.
    worker_env = {**env, "REDIS_URL": private_redis}
    children: list[Child] = []
    try:
        children.append(start_worker(tmp_path, worker_env, name="intake-worker", concurrency=2))
        wait_for_worker(children[0])
        children.append(start_beat(tmp_path, worker_env, name="intake-beat"))
        [record] = wait_final(ledger, [ref], timeout=30)
        assert record.state == State.COMPLETED
    finally:
        for child in children:
            child.stop()


def test_the_safety_net_timer_is_seconds_not_a_lease(
    private_redis: str, env: dict[str, str]
) -> None:
    """With the nudge delivered (the broker works), the stored timer is still only seconds out."""
    settings = _settings(private_redis, env["MCE_BASE_URL"])
    assert settings.lease_seconds == 12.0
    net = safety_net_seconds(settings)
    assert net == 2.0  # tick 0.25 s: max(2 s, 4 ticks)
    assert safety_net_seconds(load_settings(profile="sandbox")) == 4.0  # default tick 1 s
    ledger = Ledger.from_url(private_redis)
    producer = Producer(settings, ledger=ledger)
    ref = f"net-{time.time_ns()}"
    before = now()
    producer.submit(
        {"originalTransactionType": 1, "originalTransactionId": f"{ref}-tx", "clientReference": ref}
    )
    due = ledger.due_at(ref)
    assert due is not None
    assert before + net - 0.5 <= due <= now() + net + 0.5
    ledger.redis.flushdb()  # the queued nudge and the record must not reach the next test
