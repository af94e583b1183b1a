"""The console's credentials and session cookie (``refunds.web.console.auth``): pure logic, no
server. Which key opens which role, what a cookie must be to count, and the configurations that
must refuse to start."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from itsdangerous import TimestampSigner

from config.settings import Settings, load_settings
from refunds.errors import ConfigError
from refunds.web.console.auth import ConsoleAuth, csrf_ok
from refunds.web.deps import PLACEHOLDER_KEYS

INTAKE = "intake-key-8c2d"
OPERATORS = {"operator-key-1f3a": "alice"}
PRODUCTION: dict[str, Any] = {
    "profile": "production",
    "mce_client_id": "id-x",
    "mce_client_secret": "real-secret-123456",
    "api_key": INTAKE,
    "mce_base_url": "https://mce.example",
    "mce_webhook_secret": "whsec-real-abc123",
    "redis_url": "redis://redis.example:6379/0",  # production names its Redis (never reached)
}


def settings(**more: Any) -> Settings:
    return load_settings(
        **{**PRODUCTION, "console_secret": "s" * 40, "viewer_keys": "vic:viewer-key-4e5f", **more}
    )


def console(**more: Any) -> ConsoleAuth:
    return ConsoleAuth(
        settings(**more),
        intake_key=INTAKE,
        operator_keys=OPERATORS,
        placeholder_keys=frozenset(PLACEHOLDER_KEYS),
    )


def test_an_operator_key_opens_an_operator_session_and_a_viewer_key_a_viewer_one() -> None:
    auth = console()
    alice = auth.sign_in("operator-key-1f3a")
    vic = auth.sign_in(" viewer-key-4e5f ")
    assert alice is not None and (alice.name, alice.role, alice.can_act) == (
        "alice",
        "operator",
        True,
    )
    assert vic is not None and (vic.name, vic.role, vic.can_act) == ("vic", "viewer", False)
    assert auth.sign_in(INTAKE) is None  # the intake key is no console key
    assert auth.sign_in("") is None
    assert auth.sign_in("operator-key-1f3") is None


def test_a_cookie_round_trips_and_carries_neither_key() -> None:
    auth = console()
    alice = auth.sign_in("operator-key-1f3a")
    assert alice is not None
    cookie = auth.dump(alice)
    assert "operator-key-1f3a" not in cookie
    assert auth.load(cookie) == alice
    assert auth.secure_cookie is True  # outside the sandbox, by default


def test_a_cookie_signed_with_another_secret_or_altered_is_refused() -> None:
    alice = console().sign_in("operator-key-1f3a")
    assert alice is not None
    other = console(console_secret="t" * 40)
    assert other.load(console().dump(alice)) is None
    cookie = console().dump(alice)
    assert console().load(cookie[:-1] + ("x" if cookie[-1] != "x" else "y")) is None
    assert console().load(None) is None


def test_a_cookie_older_than_the_session_lifetime_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth = console(console_session_seconds=600)
    alice = auth.sign_in("operator-key-1f3a")
    assert alice is not None
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) - 601)
    old = auth.dump(alice)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) - 590)
    recent = auth.dump(alice)
    monkeypatch.undo()
    assert auth.load(old) is None
    assert auth.load(recent) == alice


def test_re_signing_a_cookie_never_extends_the_sign_in() -> None:
    # Each page that shows a message signs the cookie again with the current time; the session
    # still ends its lifetime after the sign-in, however often it was re-signed (no sliding).
    auth = console(console_session_seconds=600)
    alice = auth.sign_in("operator-key-1f3a")
    assert alice is not None
    signed_in_long_ago = dataclasses.replace(alice, issued=alice.issued - 601)
    assert auth.load(auth.dump(signed_in_long_ago)) is None  # freshly signed, still too old
    recently = dataclasses.replace(alice, issued=alice.issued - 590)
    assert auth.load(auth.dump(recently)) == recently


def test_a_session_ends_when_its_key_is_removed_or_changes_role() -> None:
    alice = console().sign_in("operator-key-1f3a")
    assert alice is not None
    cookie = console().dump(alice)
    rotated = ConsoleAuth(
        settings(),
        intake_key=INTAKE,
        operator_keys={"operator-key-NEW": "alice"},
        placeholder_keys=frozenset(PLACEHOLDER_KEYS),
    )
    assert rotated.load(cookie) is None
    demoted = ConsoleAuth(
        settings(viewer_keys="alice:operator-key-1f3a"),
        intake_key=INTAKE,
        operator_keys={},
        placeholder_keys=frozenset(PLACEHOLDER_KEYS),
    )
    assert demoted.load(cookie) is None


@pytest.mark.parametrize(
    ("viewer_keys", "message"),
    [
        ("vic", "REFUNDS_VIEWER_KEYS must be name:key pairs"),
        ("vic:", "REFUNDS_VIEWER_KEYS must be name:key pairs"),
        (":key-abc", "REFUNDS_VIEWER_KEYS must be name:key pairs"),
        ("vic:operator-key-1f3a", "viewer 'vic' has the intake key or an operator key"),
        (f"vic:{INTAKE}", "viewer 'vic' has the intake key or an operator key"),
        ("vic:changeme", "viewer 'vic' has a placeholder key"),
    ],
)
def test_bad_viewer_keys_refuse_to_start_without_quoting_the_key(
    viewer_keys: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        console(viewer_keys=viewer_keys)
    assert message in str(info.value)
    secret = viewer_keys.partition(":")[2]
    assert not secret or secret not in str(info.value)


def test_without_a_secret_the_console_is_off_outside_the_sandbox_and_on_in_it() -> None:
    assert console(console_secret=None).enabled is False
    sandbox = ConsoleAuth(
        load_settings(profile="sandbox"),
        intake_key=INTAKE,
        operator_keys=OPERATORS,
        placeholder_keys=frozenset(PLACEHOLDER_KEYS),
    )
    assert sandbox.enabled is True and sandbox.secure_cookie is False


def test_the_csrf_token_must_be_the_sessions_own() -> None:
    alice = console().sign_in("operator-key-1f3a")
    assert alice is not None
    assert csrf_ok(alice, alice.csrf)
    assert not csrf_ok(alice, None)
    assert not csrf_ok(alice, "")
    assert not csrf_ok(alice, alice.csrf + "x")
