"""Webhook-first polling (issue 9), end to end: real web app, worker, beat and sandbox webhooks.

With ``REFUNDS_WEBHOOKS_EXPECTED=true`` the poll timer waits ``REFUNDS_WEBHOOK_GRACE_SECONDS``
before the first Get. With every webhook delivered a refund costs Create + Confirm and no Get;
with the final webhook never sent (the sandbox's ``webhook_events`` without status 3) the refund
still ends, by a Get made after the grace window.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from devstack.localstack import (
    Child,
    free_port,
    start_beat,
    start_sandbox,
    start_web,
    start_worker,
    wait_for_worker,
    wait_until,
)
from refunds.models import State
from refunds.store.ledger import Ledger
from tests.conftest import SandboxAdmin, wait_final

KEY = "test-api-key-wfp"
SECRET = "whsec-test-wfp-91c3"
GRACE = 5.0  # generous: the machine is shared and slow; webhooks arrive within ~1 s here
PROCESSING = 0.5


class Stack:
    def __init__(self, url: str, ledger: Ledger, sandbox: SandboxAdmin, logs: list[Child]) -> None:
        self.url = url
        self.ledger = ledger
        self.sandbox = sandbox
        self.children = logs

    def submit(self, ref: str) -> None:
        answer = requests.post(
            self.url + "/refunds",
            json={
                "originalTransactionType": 1,
                "originalTransactionId": f"tx-{ref}",
                "clientReference": ref,
            },
            headers={"X-API-Key": KEY},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text

    def logs(self) -> str:
        return "\n".join(child.tail(30) for child in self.children)


@pytest.fixture(scope="module")
def stack(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[Stack]:
    """Database 6 of the private Redis, with its own sandbox (webhooks on), web, worker, beat."""
    logdir: Path = tmp_path_factory.mktemp("wfp")
    url = redis_url.rsplit("/", 1)[0] + "/6"
    redis.Redis.from_url(url).flushdb()  # our private server's database, not the shared Redis
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/webhooks/mce"
    sandbox_child, sandbox_url = start_sandbox(
        logdir, extra_args=["--webhook-url", hook_url, "--webhook-secret", SECRET]
    )
    wenv = {
        **env,
        "REDIS_URL": url,
        "MCE_BASE_URL": sandbox_url,
        "MCE_WEBHOOK_SECRET": SECRET,
        "REFUNDS_API_KEY": KEY,
        "REFUNDS_WEBHOOKS_EXPECTED": "true",
        "REFUNDS_WEBHOOK_GRACE_SECONDS": str(GRACE),
        "REFUNDS_POLL_SCHEDULE": "0.2,0.3,0.5",  # what follows the grace window, fast
    }
    children: list[Child] = [sandbox_child]
    try:
        web = start_web(logdir, wenv, port=port, name="wfp-web")
        children.append(web)
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 30, "web", web
        )
        worker = start_worker(logdir, wenv, name="wfp-worker", concurrency=4)
        children.append(worker)
        wait_for_worker(worker)
        children.append(start_beat(logdir, wenv, name="wfp-beat"))
        yield Stack(
            f"http://127.0.0.1:{port}", Ledger.from_url(url), SandboxAdmin(sandbox_url), children
        )
    finally:
        for child in reversed(children):
            child.stop()


def _reset(stack: Stack, **config: Any) -> None:
    stack.sandbox.reset(
        processing_seconds=PROCESSING,
        webhook_url=stack.url + "/webhooks/mce",
        webhook_secret=SECRET,
        **config,
    )


def test_with_webhooks_healthy_a_refund_costs_create_and_confirm_and_no_get(
    stack: Stack, prefix: str
) -> None:
    _reset(stack)
    refs = [f"{prefix}{i}" for i in range(6)]
    stack.sandbox.flag([f"tx-{r}" for r in refs])
    for ref in refs:
        stack.submit(ref)
    records = wait_final(stack.ledger, refs, 60)
    assert {r.state for r in records} == {State.COMPLETED}, stack.logs()
    assert all(r.history[-1].actor == "mce-webhook" for r in records)
    counters = stack.sandbox.counters(prefix)
    # Create + Confirm each (the sandbox's effects per reference) and not one Get. (A reset
    # revokes the worker's cached token, so "calls" may hold a 401 Create answered by a refresh.)
    assert counters["calls"].get("get", 0) == 0, counters["calls"]
    effects = counters["effects"]
    assert effects == {ref: {"create": 1, "confirm": 1} for ref in refs}, effects
    assert all(r.polls == 0 for r in records)


def test_a_dropped_final_webhook_ends_by_polling_after_the_grace_window(
    stack: Stack, prefix: str
) -> None:
    _reset(stack, webhook_events=[1, 2, 4, 5])  # the completed (3) webhook is never sent
    refs = [f"{prefix}{i}" for i in range(3)]
    stack.sandbox.flag([f"tx-{r}" for r in refs])
    for ref in refs:
        stack.submit(ref)
    records = wait_final(stack.ledger, refs, 60 + GRACE)
    assert {r.state for r in records} == {State.COMPLETED}, stack.logs()
    for record in records:
        final = record.history[-1]
        assert final.actor == "pipeline"  # the poller finished it, not a webhook
        processing = next(h for h in record.history if h.to_state == State.PROCESSING)
        waited = final.at - processing.at
        # The Get came after the grace window, not on the 0.2 s schedule.
        assert GRACE - 0.3 <= waited < GRACE + 10, (record.client_reference, waited)
        assert record.polls >= 1
    calls = stack.sandbox.counters(prefix)["calls"]
    effects = stack.sandbox.counters(prefix)["effects"]
    assert calls["get"] >= len(refs), calls
    assert len(effects) == len(refs), effects
    assert all(e["create"] == 1 for e in effects.values()), effects
