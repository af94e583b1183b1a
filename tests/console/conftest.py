"""The console in a real browser: Playwright driving Debian's Chromium against the web app under
uvicorn, with a worker and beat on a private Redis database and the session's sandbox.

No browser is ever downloaded (never ``playwright install``): Chromium comes from the system
(``apt-get install chromium``, ``/usr/bin/chromium`` or ``$CONSOLE_CHROMIUM``); without it, or
without the ``playwright`` package, the browser tests skip saying so.

A failing test keeps a screenshot of its page: ``tests/console/artifacts/<test>.png`` (or under
``$CONSOLE_ARTIFACTS``). With ``$CONSOLE_SCREENSHOTS`` set to a directory, the tests also save the
pages the docs show (overview, approvals, a refund) there: ``docs/img`` regenerates them.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.localstack import free_port, start_beat, start_web, start_worker, wait_for_worker
from devstack.processes import Child
from devstack.wait import wait_until
from refunds.models import RefundRecord, State
from refunds.producer import Producer
from refunds.store.ledger import Ledger
from tests.conftest import TEST_ENV, RedisDatabases, SandboxAdmin

INTAKE_KEY = "console-intake-key-5c1e"
OPERATOR = ("alice", "console-operator-key-9b3f")
VIEWER = ("victor", "console-viewer-key-2d7a")
THRESHOLDS = "USDT=100"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("CONSOLE_ARTIFACTS") or Path(__file__).parent / "artifacts")


def chromium_path() -> str | None:
    found = os.environ.get("CONSOLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).exists() else None


@dataclass
class ConsoleStack:
    """The web app (console included), its Redis database, and how to submit refunds."""

    url: str
    redis_url: str
    ledger: Ledger
    producer: Producer
    web: Child
    env: dict[str, str]

    def submit(
        self, sandbox: SandboxAdmin, ref: str, amount: str = "50.00", *, flag: bool = True
    ) -> str:
        txn = f"tx-{ref}"
        if flag:
            sandbox.flag([txn], amount=amount, currency="USDT")
        self.producer.submit(
            {"originalTransactionType": 1, "originalTransactionId": txn, "clientReference": ref}
        )
        return ref

    def wait_state(self, ref: str, states: set[State], timeout: float = 30.0) -> RefundRecord:
        deadline = time.monotonic() + timeout
        record = None
        while time.monotonic() < deadline:
            record = self.ledger.find(ref)
            if record is not None and record.state in states:
                return record
            time.sleep(0.1)
        seen = None if record is None else (record.state, record.last_error)
        raise AssertionError(f"{ref} not in {sorted(states)} after {timeout}s (last: {seen})")


def web_env(env: dict[str, str], url: str, **more: str) -> dict[str, str]:
    return {
        **env,
        **TEST_ENV,
        "REDIS_URL": url,
        "REFUNDS_API_KEY": INTAKE_KEY,
        "REFUNDS_OPERATOR_KEYS": ":".join(OPERATOR),
        "REFUNDS_VIEWER_KEYS": ":".join(VIEWER),
        "REFUNDS_CONSOLE_SECRET": "console-test-secret-0f4e8a61b2",
        "REFUNDS_CONSOLE_SECURE_COOKIE": "false",  # plain HTTP on 127.0.0.1 in the tests
        "REFUNDS_APPROVAL_THRESHOLDS": THRESHOLDS,
        **more,
    }


def start_console_web(logdir: Path, wenv: dict[str, str], name: str) -> tuple[Child, str]:
    port = free_port()
    child = start_web(logdir, wenv, port=port, name=name)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(url + "/healthz", timeout=1).ok, 30, what=name, child=child)
    return child, url


@pytest.fixture(scope="module")
def console_stack(
    redis_dbs: RedisDatabases, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    """Its own Redis database: web (with the console), a worker and beat with an approval
    threshold (USDT 100), against the session's sandbox."""
    url = redis_dbs.take()
    logdir = tmp_path_factory.mktemp("console")
    wenv = web_env(env, url)
    children: list[Child] = []
    try:
        web, web_url = start_console_web(logdir, wenv, "console-web")
        children.append(web)
        worker = start_worker(logdir, wenv, name="console-worker", concurrency=2)
        children.append(worker)
        wait_for_worker(worker)
        children.append(start_beat(logdir, wenv, name="console-beat"))
        ledger = Ledger.from_url(url)
        from config.settings import load_settings  # noqa: PLC0415 - after the env is known

        settings = load_settings(profile="sandbox", redis_url=url, mce_base_url=env["MCE_BASE_URL"])
        yield ConsoleStack(web_url, url, ledger, Producer(settings, ledger=ledger), web, wenv)
    finally:
        for child in reversed(children):
            child.stop()
        redis_dbs.give_back(url)


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional (dev extra)
    except ImportError:
        pytest.skip("playwright is not installed (the dev extra): browser tests skipped")
    path = chromium_path()
    if path is None:
        pytest.skip("no system Chromium (apt-get install chromium): browser tests skipped")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, Any]:
    """Keep each phase's report on the item, so the page fixture knows the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; on failure its screenshot is kept."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        shot = ARTIFACTS / f"{name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failing page: {shot}")
        except Exception as exc:  # noqa: BLE001 - a failed screenshot must not hide the failure
            print(f"no screenshot: {exc}")
    context.close()


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url + "/console/login")
    page.get_by_label("Console key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/console")


@pytest.fixture
def shot() -> Callable[[Any, str], None]:
    """Save a page for the docs when ``$CONSOLE_SCREENSHOTS`` names a directory; else nothing."""

    def save(page: Any, name: str) -> None:
        target = os.environ.get("CONSOLE_SCREENSHOTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(target) / f"console-{name}.png"), full_page=True)

    return save
