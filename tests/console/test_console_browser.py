"""The console driven as an on-call operator drives it: Chromium, a live web app, worker, beat and
sandbox. Each test says what a person does and what they must see; the ledger is read to prove
what really changed (or that nothing did)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from refunds.mce.contract import Code
from refunds.models import State
from tests.conftest import SandboxAdmin
from tests.console.conftest import OPERATOR, VIEWER, ConsoleStack, sign_in

pytestmark = pytest.mark.timeout(180)


def csrf_of(page: Any) -> str:
    """The session's CSRF token, as the sign-out form carries it."""
    token: str = page.locator("input[name=csrf_token]").first.get_attribute("value")
    return token


def state_on_page(page: Any) -> str:
    text: str = page.locator("h1 [data-testid=state]").inner_text()
    return text.strip()


def test_a_wrong_key_is_refused_and_an_operator_key_signs_in(
    page: Any, console_stack: ConsoleStack
) -> None:
    url = console_stack.url
    page.goto(url + "/console/approvals")
    assert page.url.startswith(url + "/console/login")  # no session: sent to sign in

    page.get_by_label("Console key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "That key is not an operator or viewer key."
    assert page.context.cookies() == []  # refused: no session cookie

    page.get_by_label("Console key").fill(OPERATOR[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/console/approvals")  # back where the operator was going
    assert page.get_by_test_id("who").inner_text() == "alice · operator"
    # The app's own stylesheet applied (allowed by the page's policy, which allows nothing else).
    header = page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor")
    assert header == "rgb(36, 41, 47)"
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert OPERATOR[1] not in cookie["value"]  # the key itself never travels again

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(url + "/console/login")
    page.goto(url + "/console")
    assert page.url.startswith(url + "/console/login")  # signed out: the session is gone


def test_approving_a_held_refund_shows_its_amount_and_then_its_new_state(
    page: Any,
    console_stack: ConsoleStack,
    sandbox: SandboxAdmin,
    prefix: str,
    shot: Callable[[Any, str], None],
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    console_stack.wait_state(ref, {State.AWAITING_APPROVAL})
    sign_in(page, console_stack.url, OPERATOR[1])
    shot(page, "overview")

    page.get_by_role("link", name="Approvals").click()
    row = page.locator(f"tr[data-ref='{ref}']")
    assert row.get_by_test_id("amount").inner_text() == "500.00"
    assert "USDT" in row.inner_text()
    shot(page, "approvals")

    row.get_by_label(f"Reason for {ref}").fill("merchant called, verified")
    row.get_by_role("button", name="Approve").click()
    assert f"{ref} approved" in page.get_by_test_id("flash").inner_text()
    assert page.locator(f"tr[data-ref='{ref}']").count() == 0  # no longer waiting

    done = console_stack.wait_state(ref, {State.COMPLETED, State.NEEDS_ATTENTION})
    assert done.state == State.COMPLETED, done.last_error
    assert done.approved_by == "alice"  # the signed-in key's name, not a typed one
    approvals = [h for h in done.history if h.to_state == State.CONFIRMING]
    assert (approvals[0].actor, approvals[0].reason) == (
        "alice",
        "approved: merchant called, verified",
    )

    page.goto(f"{console_stack.url}/console/refunds/{ref}")
    assert state_on_page(page) == "completed"
    timeline = page.get_by_test_id("timeline").inner_text()
    assert "approved: merchant called, verified" in timeline and "alice" in timeline
    assert page.get_by_test_id("findings").is_visible()
    shot(page, "refund")


def test_a_refund_stopped_for_an_unflagged_payment_is_retried_from_the_queue_and_completes(
    page: Any, console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}late", flag=False)
    stuck = console_stack.wait_state(ref, {State.NEEDS_ATTENTION, State.COMPLETED})
    assert stuck.state == State.NEEDS_ATTENTION
    sign_in(page, console_stack.url, OPERATOR[1])

    page.get_by_role("link", name="Needs attention").click()
    page.get_by_label("Code").select_option(Code.NOT_PENDING)
    page.get_by_role("button", name="Filter").click()
    row = page.locator(f"tr[data-ref='{ref}']")
    assert Code.NOT_PENDING in row.inner_text()

    sandbox.flag([f"tx-{ref}"], amount="20.00", currency="USDT")  # KYT flags it now
    row.get_by_label(f"Reason to retry {ref}").fill("payment flagged now")
    row.get_by_role("button", name="Retry").click()
    assert f"{ref} retried" in page.get_by_test_id("flash").inner_text()

    done = console_stack.wait_state(ref, {State.COMPLETED}, timeout=30)
    assert done.key_generation == stuck.key_generation + 1
    retried = [h for h in done.history if h.reason.startswith("retried:")]
    # The line names who and why, then keeps the error the retry cleared (its evidence).
    assert [h.actor for h in retried] == ["alice"]
    assert retried[0].reason.startswith("retried: payment flagged now; previous error: ")
    assert "CRYPTO_REFUND_NOT_PENDING" in retried[0].reason
    page.goto(f"{console_stack.url}/console/refunds/{ref}")
    assert state_on_page(page) == "completed"


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_refused(
    page: Any, console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    before = console_stack.wait_state(ref, {State.AWAITING_APPROVAL})
    sign_in(page, console_stack.url, VIEWER[1])
    assert page.get_by_test_id("who").inner_text() == "victor · viewer"

    page.goto(f"{console_stack.url}/console/approvals")
    assert page.locator(f"tr[data-ref='{ref}']").count() == 1  # sees it...
    assert page.get_by_role("button", name="Approve").count() == 0  # ...cannot act on it
    page.goto(f"{console_stack.url}/console/refunds/{ref}")
    assert page.get_by_role("button", name=re.compile("Approve|Reject|Retry|Cancel")).count() == 0

    for path in (
        "/console",
        "/console/attention",
        "/console/approvals",
        "/console/bulk-retry",
        "/console/dead-letters",
        "/console/conflicts",
        f"/console/refunds/{ref}",
    ):
        page.goto(console_stack.url + path)
        posts = page.locator("form[method=post]")
        assert posts.count() == 1, path  # sign-out only
        assert posts.get_attribute("action") == "/console/logout"

    # The form a viewer does not get, posted anyway with the viewer's own valid CSRF token:
    answer = page.request.post(
        f"{console_stack.url}/console/refunds/{ref}/approve",
        form={"csrf_token": csrf_of(page), "reason": "forged"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert "viewers cannot act" in answer.text()
    after = console_stack.ledger.get(ref)
    assert (after.state, after.version, after.history) == (
        State.AWAITING_APPROVAL,
        before.version,
        before.history,
    )


def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(
    page: Any, console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    before = console_stack.wait_state(ref, {State.AWAITING_APPROVAL})
    sign_in(page, console_stack.url, OPERATOR[1])  # a real operator session cookie
    target = f"{console_stack.url}/console/refunds/{ref}/approve"

    missing = page.request.post(target, form={"reason": "no token"}, max_redirects=0)
    wrong = page.request.post(
        target, form={"reason": "wrong token", "csrf_token": "x" * 32}, max_redirects=0
    )
    assert (missing.status, wrong.status) == (403, 403)
    assert "CSRF" in missing.text()
    after = console_stack.ledger.get(ref)
    assert (after.state, after.version, after.history) == (
        State.AWAITING_APPROVAL,
        before.version,
        before.history,
    )


def test_every_input_of_the_main_forms_has_a_label(
    page: Any, console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    held = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    stuck = console_stack.submit(sandbox, f"{prefix}late", flag=False)
    console_stack.wait_state(held, {State.AWAITING_APPROVAL})
    console_stack.wait_state(stuck, {State.NEEDS_ATTENTION})
    page.goto(console_stack.url + "/console/login")
    assert_labelled(page)
    sign_in(page, console_stack.url, OPERATOR[1])
    for path in (
        "/console",
        "/console/approvals",
        "/console/attention",
        "/console/bulk-retry",
        "/console/dead-letters",
        f"/console/refunds/{held}",
        f"/console/refunds/{stuck}",
    ):
        page.goto(console_stack.url + path)
        assert_labelled(page)


def assert_labelled(page: Any) -> None:
    """Every visible input, select and textarea is found by its label's text, and by no other."""
    fields = page.locator("input:not([type=hidden]), select, textarea")
    assert fields.count() > 0, page.url
    for i in range(fields.count()):
        field = fields.nth(i)
        ident = field.get_attribute("id")
        assert ident, f"an input without an id on {page.url}"
        label = page.locator(f"label[for='{ident}']")
        assert label.count() == 1, f"#{ident} has no label on {page.url}"
        found = page.get_by_label(label.inner_text(), exact=True)
        assert found.count() == 1 and found.get_attribute("id") == ident, (ident, page.url)


def test_sign_in_and_approve_work_with_the_keyboard_alone(
    page: Any, console_stack: ConsoleStack, sandbox: SandboxAdmin, prefix: str
) -> None:
    ref = console_stack.submit(sandbox, f"{prefix}big", "500.00")
    console_stack.wait_state(ref, {State.AWAITING_APPROVAL})
    url = console_stack.url

    page.goto(url + "/console/login")
    assert page.evaluate("document.activeElement.id") == "key"  # the key field has the focus
    page.keyboard.type(OPERATOR[1])
    page.keyboard.press("Enter")
    page.wait_for_url(url + "/console")

    page.goto(url + "/console/approvals")
    target = f"reason-{ref}"
    for _ in range(80):  # Tab through the page to the refund's reason field
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == target:
            break
    else:
        pytest.fail(f"Tab never reached #{target}")
    page.keyboard.type("approved by keyboard")
    page.keyboard.press("Enter")  # the form's first button: Approve
    assert f"{ref} approved" in page.get_by_test_id("flash").inner_text()
    done = console_stack.wait_state(ref, {State.COMPLETED, State.NEEDS_ATTENTION})
    assert done.state == State.COMPLETED and done.approved_by == "alice"
