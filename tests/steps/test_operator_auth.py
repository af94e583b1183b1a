"""Operator routes need an operator credential (issue 10, case 5): the intake key that submitted a
refund cannot approve it, and ``approvedBy`` is the name the operator key is configured under.

The real app (``create_app``) served by uvicorn from a thread, real HTTP, the test's private Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn

from config.settings import Settings, load_settings
from devstack.sandbox_admin import SandboxAdmin
from refunds import steps
from refunds.context import Context
from refunds.errors import ConfigError
from refunds.models import State
from refunds.web.app import create_app
from refunds.web.deps import INTAKE_KEY_REFUSED, NO_OPERATOR_KEY, operator_keys_of
from tests.steps.conftest import received

INTAKE = "intake-key-5c1d"
ANN = "ann-operator-key-8e2f"


def serve(settings: Settings, ctx: Context) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, ctx), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def configured(ctx: Context, **more: Any) -> Settings:
    """Settings validated as at start (``load_settings``), on the test's Redis and sandbox."""
    base: dict[str, Any] = {
        "profile": "sandbox",
        "redis_url": ctx.settings.redis_url,
        "mce_base_url": ctx.settings.mce_base_url,
        "api_key": INTAKE,
        "approval_thresholds": "USDT=1000",
    }
    return load_settings(**{**base, **more})


@pytest.fixture
def web(ctx: Context) -> Iterator[str]:
    settings = configured(ctx, operator_keys=f"ann:{ANN},bob:bob-operator-key-1a9c")
    ctx.settings = settings
    yield from serve(settings, ctx)


def approve(url: str, ref: str, key: str, **body: str) -> requests.Response:
    return requests.post(
        f"{url}/refunds/{ref}/approve",
        json={"reason": "checked with the merchant", **body},
        headers={"X-API-Key": key},
        timeout=10,
    )


def test_the_intake_key_gets_403_and_the_operator_key_approves_as_its_name(
    ctx: Context, sandbox: SandboxAdmin, web: str
) -> None:
    received(ctx, sandbox, "big", amount="5000", currency="USDT")
    steps.create(ctx, "big")
    assert ctx.ledger.get("big").state == State.AWAITING_APPROVAL

    refused = approve(web, "big", INTAKE, by="ann")
    assert refused.status_code == 403
    assert refused.json()["detail"] == INTAKE_KEY_REFUSED
    assert approve(web, "big", "not-a-key").status_code == 401
    assert ctx.ledger.get("big").state == State.AWAITING_APPROVAL  # nothing moved

    done = approve(web, "big", ANN, by="mallory")  # the typed name is not who acted
    assert done.status_code == 200, done.text
    assert done.json()["approvedBy"] == "ann"
    record = ctx.ledger.get("big")
    assert record.state == State.CONFIRMING and record.approved_by == "ann"
    assert record.history[-1].actor == "ann"
    # The intake key still does what it is for.
    got = requests.get(f"{web}/refunds/big", headers={"X-API-Key": INTAKE}, timeout=10)
    assert got.status_code == 200


def test_no_operator_key_configured_closes_the_operator_routes(
    ctx: Context, sandbox: SandboxAdmin
) -> None:
    settings = configured(
        ctx,
        profile="production",
        mce_client_id="client-1",
        mce_client_secret="client-secret-1",
        mce_webhook_secret="webhook-secret-1",
    )
    assert operator_keys_of(settings, INTAKE) == {}
    for url in serve(settings, ctx):
        for action in ("approve", "retry", "cancel"):
            answer = requests.post(
                f"{url}/refunds/any/{action}",
                json={"reason": "r"},
                headers={"X-API-Key": INTAKE},
                timeout=10,
            )
            assert (answer.status_code, answer.json()["detail"]) == (403, NO_OPERATOR_KEY)


def test_operator_keys_must_differ_from_the_intake_key(ctx: Context) -> None:
    with pytest.raises(ConfigError, match="intake key"):
        operator_keys_of(configured(ctx, operator_keys=f"ann:{INTAKE}"), INTAKE)
    with pytest.raises(ConfigError, match="name:key"):
        operator_keys_of(configured(ctx, operator_keys="just-a-key"), INTAKE)
    single = configured(ctx, operator_api_key="single-operator-key-3b")
    assert operator_keys_of(single, INTAKE) == {"single-operator-key-3b": "operator"}
