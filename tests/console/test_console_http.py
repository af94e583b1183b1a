"""The console over plain HTTP (no browser): the read-only switch, forged cookies, reject, the
bulk retry's preview as the exact set it touches, dead-letter replay and search, against the same
live web app, worker, beat and sandbox as the browser tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from itsdangerous import URLSafeTimedSerializer

from devstack.processes import Child
from refunds.models import State
from refunds.store.outbox import Outbox
from tests.conftest import SandboxAdmin
from tests.console.conftest import (
    OPERATOR,
    VIEWER,
    ConsoleStack,
    start_console_web,
    web_env,
)

pytestmark = pytest.mark.timeout(120)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Person:
    """A requests session signed in to one console with a key."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.http = requests.Session()
        answer = self.http.post(
            base + "/console/login", data={"key": key, "next": "/console"}, timeout=10
        )
        assert answer.status_code == 200 and answer.url == base + "/console", answer.text
        found = CSRF.search(answer.text)
        assert found is not None
        self.csrf = found.group(1)

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.base + path, timeout=10)

    def post(self, path: str, **form: str | list[str]) -> requests.Response:
        return self.http.post(self.base + path, data={"csrf_token": self.csrf, **form}, timeout=10)


@pytest.fixture(scope="module")
def read_only_url(
    console_stack: ConsoleStack, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second web app on the same database with the console switched to read-only."""
    logdir: Path = tmp_path_factory.mktemp("console-ro")
    wenv = web_env(env, console_stack.redis_url, REFUNDS_CONSOLE_READ_ONLY="true")
    child: Child
    child, url = start_console_web(logdir, wenv, "console-web-ro")
    try:
        yield url
    finally:
        child.stop()


def test_the_read_only_switch_hides_every_action_and_refuses_an_operator(
    console_stack: ConsoleStack, read_only_url: str, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    before = console_stack.wait_state(ref, {State.AWAITING_APPROVAL})
    alice = Person(read_only_url, OPERATOR[1])

    answer = alice.get("/console/approvals")
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["cache-control"] == "no-store"
    page = answer.text
    assert ref in page and "read-only console" in page
    assert "Approve</button>" not in page and "Reject</button>" not in page
    assert "Approve</button>" not in alice.get(f"/console/refunds/{ref}").text

    refused = alice.post(f"/console/refunds/{ref}/approve", reason="read-only test")
    assert refused.status_code == 403
    assert "read-only" in refused.text
    assert console_stack.ledger.get(ref).version == before.version

    # The same operator on the console that is not read-only gets the buttons.
    assert (
        "Approve</button>" in Person(console_stack.url, OPERATOR[1]).get("/console/approvals").text
    )


def test_a_tampered_or_missing_cookie_gets_no_page_and_no_action(
    console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    before = console_stack.wait_state(ref, {State.AWAITING_APPROVAL})
    viewer = Person(console_stack.url, VIEWER[1])
    cookie = viewer.http.cookies.get("refunds_console")
    assert cookie
    # The viewer's session rewritten to claim the operator role, signed without the secret.
    forged = URLSafeTimedSerializer("not-the-secret", salt="refunds.console.session").dumps(
        {"n": OPERATOR[0], "r": "operator", "c": viewer.csrf, "k": "0" * 32}
    )
    for value in (forged, cookie[:-2] + ("A" if cookie[-1] != "A" else "B") * 2, ""):
        http = requests.Session()
        http.cookies.set("refunds_console", value, path="/console")
        page = http.get(console_stack.url + "/console", timeout=10, allow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/console/login")
        act = http.post(
            f"{console_stack.url}/console/refunds/{ref}/approve",
            data={"csrf_token": viewer.csrf, "reason": "forged"},
            timeout=10,
            allow_redirects=False,
        )
        assert act.status_code == 403
    assert console_stack.ledger.get(ref).version == before.version


def test_reject_cancels_a_held_refund_with_who_and_why_and_a_reason_is_required(
    console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    before = console_stack.wait_state(ref, {State.AWAITING_APPROVAL})
    alice = Person(console_stack.url, OPERATOR[1])

    no_reason = alice.post(f"/console/refunds/{ref}/reject", reason="  ")
    assert "a reason is required" in no_reason.text
    assert console_stack.ledger.get(ref).version == before.version

    done = alice.post(f"/console/refunds/{ref}/reject", reason="merchant withdrew it")
    assert f"{ref} rejected (cancelled): now cancelled." in done.text
    record = console_stack.ledger.get(ref)
    assert record.state == State.CANCELLED
    assert (record.history[-1].actor, record.history[-1].reason) == (
        "alice",
        "cancelled: merchant withdrew it",
    )
    again = alice.post(f"/console/refunds/{ref}/approve", reason="too late")
    assert "it is cancelled, not awaiting_approval" in again.text  # the action's own refusal


def test_bulk_retry_lists_its_refunds_first_and_touches_only_those_listed(
    console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    one = console_stack.submit(sandbox, f"{prefix}one", flag=False)
    two = console_stack.submit(sandbox, f"{prefix}two", flag=False)
    for ref in (one, two):
        console_stack.wait_state(ref, {State.NEEDS_ATTENTION})
    alice = Person(console_stack.url, OPERATOR[1])

    preview = alice.get("/console/bulk-retry?code=CRYPTO_REFUND_NOT_PENDING").text
    listed = re.findall(r'name="ref" value="([^"]+)"', preview)
    assert {one, two} <= set(listed)
    assert console_stack.ledger.get(one).state == State.NEEDS_ATTENTION  # a preview acts on none

    sandbox.flag([f"tx-{one}", f"tx-{two}"], amount="20.00", currency="USDT")
    done = alice.post(
        "/console/bulk-retry",
        code="CRYPTO_REFUND_NOT_PENDING",
        min_age="",
        ref=[one],  # the operator sent back a preview of one
        reason="payments flagged",
    )
    assert "Bulk retry: 1 retried, 0 refused, 0 no longer matching." in done.text
    retried = console_stack.wait_state(one, {State.COMPLETED}).history
    retries = [h for h in retried if h.reason.startswith("retried: payments flagged")]
    assert [h.actor for h in retries] == ["alice"]  # the line also keeps the error it clears
    still = console_stack.ledger.get(two)
    assert still.state == State.NEEDS_ATTENTION and still.key_generation == 0


def test_dead_letters_are_listed_and_replayed_with_a_reason(
    console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}small")
    console_stack.wait_state(ref, {State.COMPLETED})
    outbox = Outbox.of(console_stack.ledger)
    member = f"http:{ref}"
    outbox.record_failure(member, "merchant answered 500")
    outbox.bury(member)
    alice = Person(console_stack.url, OPERATOR[1])

    page = alice.get("/console/dead-letters").text
    assert member in page and "merchant answered 500" in page
    assert "merchant answered 500" in alice.get(f"/console/refunds/{ref}").text

    done = alice.post("/console/dead-letters/replay", member=[member], reason="endpoint is back")
    assert "1 replayed" in done.text
    assert member not in outbox.dead()


def test_search_finds_a_refund_by_reference_refund_id_or_txn_hash(
    console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}small")
    record = console_stack.wait_state(ref, {State.COMPLETED})
    assert record.crypto_refund_id and record.txn_hash
    viewer = Person(console_stack.url, VIEWER[1])
    for query in (ref, record.crypto_refund_id, record.txn_hash):
        found = viewer.get(f"/console/search?q={query}")
        assert found.url == f"{console_stack.url}/console/refunds/{ref}", query
    assert "Nothing found for" in viewer.get("/console/search?q=no-such-thing").text
