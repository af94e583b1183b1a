"""A PSP deployment: two credentials, three participants, two sandboxes (one per credential's MCE).

Real worker and beat processes read a registry file; each sandbox is one credential's MCE with its
own client id and secret, so a call sent with the wrong credential would fail its token call and
a refund sent to the wrong MCE would show up in the other sandbox's effects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from config.settings import load_settings
from devstack.processes import (
    Child,
    free_port,
    start_beat,
    start_sandbox,
    start_web,
    start_worker,
    wait_for_worker,
)
from devstack.sandbox_admin import SandboxAdmin
from devstack.wait import wait_until
from refunds.models import State
from refunds.producer import Producer
from refunds.store.events import EventStore
from refunds.store.ledger import Ledger
from tests.conftest import SANDBOX_TEST_CONFIG, RedisDatabases, wait_final

# Participant -> credential: ALPHA serves two merchants, BETA one.
SERVED_BY = {"SHOP-A1": "alpha", "SHOP-A2": "alpha", "SHOP-B1": "beta"}
SECRETS = {"alpha": "alpha-secret-7f3c", "beta": "beta-secret-91d2"}
# What each credential's MCE signs its webhooks with (beta: the new secret of a rotation).
HOOK_SECRETS = {"alpha": "alpha-hook-secret", "beta": "beta-hook-secret-next"}
API_KEY = {"X-API-Key": "psp-api-key-5c1e"}
SHOP_A1_KEY = {"X-API-Key": "shop-a1-key-2b7d"}  # scoped: SHOP-A1's refunds only

REGISTRY = """
default_participant = "SHOP-A1"

[[credentials]]
id = "alpha"
base_url = "{alpha}"
client_id = "alpha-client"
client_secret = "env:PSP_ALPHA_SECRET"
webhook_secrets = ["env:PSP_ALPHA_HOOK"]
max_rps = {alpha_rps}

[[credentials]]
id = "beta"
base_url = "{beta}"
client_id = "beta-client"
client_secret = "file:{beta_secret_file}"
webhook_secrets = ["env:PSP_BETA_HOOK", "env:PSP_BETA_HOOK_NEXT"]
max_rps = {beta_rps}

[[participants]]
participant_code = "SHOP-A1"
credential = "alpha"

[[participants]]
participant_code = "SHOP-A2"
credential = "alpha"

[[participants]]
participant_code = "SHOP-B1"
credential = "beta"

[[intake_keys]]
name = "shop-a1-app"
key = "env:PSP_SHOP_A1_KEY"
participants = ["SHOP-A1"]
"""

RATES = {"alpha": 12.0, "beta": 6.0}


@dataclass
class Psp:
    sandboxes: dict[str, SandboxAdmin]
    producer: Producer
    ledger: Ledger
    env: dict[str, str]
    web: str


@pytest.fixture(scope="module")
def psp(
    redis_dbs: RedisDatabases, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Psp]:
    url = redis_dbs.take()
    work = tmp_path_factory.mktemp("psp")
    children: list[Child] = []
    sandboxes: dict[str, SandboxAdmin] = {}
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    try:
        for cred in ("alpha", "beta"):
            logdir = work / cred
            logdir.mkdir()
            child, base = start_sandbox(
                logdir,
                extra_args=[
                    "--client-id",
                    f"{cred}-client",
                    "--client-secret",
                    SECRETS[cred],
                ],
            )
            children.append(child)
            hooks = {
                "webhook_url": f"{web_url}/webhooks/mce/{cred}",
                "webhook_secret": HOOK_SECRETS[cred],
            }
            sandboxes[cred] = SandboxAdmin(base, defaults={**SANDBOX_TEST_CONFIG, **hooks})
        secret_file = work / "beta.secret"
        secret_file.write_text(SECRETS["beta"] + "\n")
        registry = work / "registry.toml"
        registry.write_text(
            REGISTRY.format(
                alpha=sandboxes["alpha"].url,
                beta=sandboxes["beta"].url,
                beta_secret_file=secret_file,
                alpha_rps=RATES["alpha"],
                beta_rps=RATES["beta"],
            )
        )
        psp_env = {
            **env,
            "REDIS_URL": url,
            "REFUNDS_REGISTRY_FILE": str(registry),
            "PSP_ALPHA_SECRET": SECRETS["alpha"],
            "PSP_ALPHA_HOOK": "alpha-hook-secret",
            "PSP_BETA_HOOK": "beta-hook-secret",
            "PSP_BETA_HOOK_NEXT": "beta-hook-secret-next",
            "REFUNDS_AUTH_PAUSE_SECONDS": "1",
            "REFUNDS_PARTICIPANT_HOLD_SECONDS": "0.5",
            "REFUNDS_API_KEY": API_KEY["X-API-Key"],
            "PSP_SHOP_A1_KEY": SHOP_A1_KEY["X-API-Key"],
        }
        web = start_web(work, psp_env, port=web_port, name="psp-web")
        children.append(web)
        wait_until(
            lambda: requests.get(f"{web_url}/healthz", timeout=1).ok, 30, what="web", child=web
        )
        worker = start_worker(work, psp_env, name="psp-worker", concurrency=4)
        children.append(worker)
        wait_for_worker(worker)
        children.append(start_beat(work, psp_env, name="psp-beat"))
        with pytest.MonkeyPatch.context() as mp:
            for name in ("REFUNDS_REGISTRY_FILE", "PSP_ALPHA_SECRET", "PSP_ALPHA_HOOK"):
                mp.setenv(name, psp_env[name])
            mp.setenv("PSP_BETA_HOOK", psp_env["PSP_BETA_HOOK"])
            mp.setenv("PSP_BETA_HOOK_NEXT", psp_env["PSP_BETA_HOOK_NEXT"])
            mp.setenv("PSP_SHOP_A1_KEY", psp_env["PSP_SHOP_A1_KEY"])
            settings = load_settings(profile="sandbox", redis_url=url)
            producer = Producer(settings)
            yield Psp(sandboxes, producer, producer.ledger, psp_env, web_url)
    finally:
        for child in reversed(children):
            child.stop()
        redis_dbs.give_back(url)


def _submit(psp: Psp, prefix: str, per_participant: int) -> dict[str, list[str]]:
    """``per_participant`` refunds for each participant; participant -> its references."""
    refs: dict[str, list[str]] = {}
    for code, cred in SERVED_BY.items():
        mine = [f"{prefix}{code}-{i}" for i in range(per_participant)]
        psp.sandboxes[cred].flag([f"tx-{r}" for r in mine])
        refs[code] = mine
    for code, mine in refs.items():
        for ref in mine:
            psp.producer.submit(
                {
                    "originalTransactionType": 1,
                    "originalTransactionId": f"tx-{ref}",
                    "clientReference": ref,
                    "participantCode": code,
                }
            )
    return refs


def _reset(psp: Psp, **switches: object) -> None:
    for admin in psp.sandboxes.values():
        admin.reset(**switches)


def _assert_calls_carry_their_participant(psp: Psp, refs: dict[str, list[str]]) -> None:
    """Every refund was created at its credential's MCE only, and every recorded Create,
    Confirm and Get there carries a participantCode that credential serves (Create: the
    refund's own)."""
    owner = {ref: code for code, mine in refs.items() for ref in mine}
    for cred, admin in psp.sandboxes.items():
        served = {c for c, by in SERVED_BY.items() if by == cred}
        effects = admin.counters("")["effects"]
        mine = {ref for ref in owner if SERVED_BY[owner[ref]] == cred}
        seen = {ref for ref in effects if ref in owner}
        assert seen == mine, (cred, sorted(seen ^ mine)[:5])
        recorded = admin.recorded_requests()
        for entry in recorded.get("create", []):
            body = entry["body"]
            assert body["participantCode"] == owner[body["clientReference"]], body
        for entry in recorded.get("confirm", []):
            assert entry["body"]["participantCode"] in served, entry
        for entry in recorded.get("get", []):
            assert entry["query"]["participantCode"] in served, entry
        for entry in recorded.get("token", []):
            assert entry["body"]["client_id"] == f"{cred}-client", entry
        assert recorded.get("create"), cred


def test_each_participants_refunds_go_through_its_own_credential_with_its_code(
    psp: Psp, prefix: str
) -> None:
    _reset(psp)
    started = time.monotonic()
    refs = _submit(psp, prefix, 50)  # the demo's 50 refunds, for each participant
    every = [r for mine in refs.values() for r in mine]
    records = wait_final(psp.ledger, every, 180)
    print(f"150 refunds of 3 participants final in {time.monotonic() - started:.1f}s")
    assert {r.state for r in records} == {State.COMPLETED}
    assert {r.client_reference: r.participant for r in records} == {
        ref: code for code, mine in refs.items() for ref in mine
    }
    _assert_calls_carry_their_participant(psp, refs)
    for cred, admin in psp.sandboxes.items():  # each MCE's webhooks, at its own address
        deliveries = admin.webhook_deliveries(prefix)
        assert deliveries, cred
        answers = {(d["outcome"], d["last_status"]) for d in deliveries}
        assert answers <= {("delivered", 200), ("delivered", 202)}, (cred, deliveries[:3])


def test_a_revoked_credential_pauses_only_its_participants_and_loses_nothing(
    psp: Psp, prefix: str
) -> None:
    _reset(psp)
    alpha = psp.sandboxes["alpha"]
    refs = _submit(psp, prefix, 6)
    # Mid-run: alpha's login is refused from now on, and its tokens stop working.
    alpha.configure(token_refuse_status=401)
    alpha.revoke_tokens()
    records = wait_final(psp.ledger, refs["SHOP-B1"], 60)
    assert {r.state for r in records} == {State.COMPLETED}
    time.sleep(2)  # alpha's refunds had the time to finish, were they not paused
    held = psp.ledger.get_many(refs["SHOP-A1"] + refs["SHOP-A2"])
    waiting = [r for r in held if not r.is_final]
    assert waiting, "alpha's refunds all finished before the revocation took effect"
    assert not any(r.state == State.NEEDS_ATTENTION for r in held), [
        (r.client_reference, r.last_error) for r in held if r.state == State.NEEDS_ATTENTION
    ]
    assert _metric(psp, "refunds_credential_refused") == {"alpha": 1.0, "beta": 0.0}
    alpha.configure(token_refuse_status=None)  # the PSP fixed its login
    every = [r for mine in refs.values() for r in mine]
    records = wait_final(psp.ledger, every, 90)
    assert {r.state for r in records} == {State.COMPLETED}
    _assert_calls_carry_their_participant(psp, refs)


def _cli(psp: Psp, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refunds.cli", *args],
        env=psp.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_paused_participant_waits_and_carries_on_when_resumed(psp: Psp, prefix: str) -> None:
    _reset(psp)
    paused_by = _cli(
        psp, "participant", "pause", "SHOP-A2", "--reason", "merchant asked", "--by", "ann"
    )
    assert paused_by.returncode == 0, paused_by.stderr
    try:
        listed = json.loads(_cli(psp, "participant", "list", "--json").stdout)
        assert {r["participantCode"]: r["paused"] for r in listed} == {
            "SHOP-A1": False,
            "SHOP-A2": True,
            "SHOP-B1": False,
        }
        assert _cli(psp, "participant", "pause", "SHOP-ZZ", "--reason", "x").returncode == 2
        refs = _submit(psp, prefix, 4)
        others = refs["SHOP-A1"] + refs["SHOP-B1"]
        records = wait_final(psp.ledger, others, 60)
        assert {r.state for r in records} == {State.COMPLETED}
        time.sleep(1.5)
        paused = psp.ledger.get_many(refs["SHOP-A2"])
        assert {r.state for r in paused} <= {State.RECEIVED, State.CREATING}
        assert _metric(psp, "refunds_participant_paused") == {
            "SHOP-A1": 0.0,
            "SHOP-A2": 1.0,
            "SHOP-B1": 0.0,
        }
        assert all(r.attempts == 0 for r in paused)  # throttled, not failed: no attempt counted
        effects = psp.sandboxes["alpha"].counters(prefix)["effects"]
        assert not set(refs["SHOP-A2"]) & set(effects)  # nothing of it reached MCE
    finally:
        resumed = _cli(psp, "participant", "resume", "SHOP-A2")
    assert resumed.returncode == 0, resumed.stderr
    counted = json.loads(_cli(psp, "participant", "list", "--json").stdout)
    assert all(r["submitted"] >= 4 for r in counted), counted
    records = wait_final(psp.ledger, refs["SHOP-A2"], 60)
    assert {r.state for r in records} == {State.COMPLETED}
    shown = json.loads(
        _cli(psp, "list", "--participant", "SHOP-A2", "--limit", "0", "--json").stdout
    )
    assert {r["clientReference"] for r in shown} >= set(refs["SHOP-A2"])
    assert not {r["clientReference"] for r in shown} & set(others)


def test_each_credential_keeps_its_own_pace(psp: Psp, prefix: str) -> None:
    # Each MCE's own limit sits a little above the credential's pace: pacing alone must keep
    # every call under it, each credential at its own rate.
    # No webhooks here: polling keeps each credential busy at its pace.
    _reset(
        psp,
        processing_seconds=0.2,
        fault_operations=["token", "create", "confirm", "get"],
        webhook_url=None,
    )
    for cred, admin in psp.sandboxes.items():
        admin.configure(max_rps=RATES[cred] * 1.2)
    start = time.monotonic()
    refs = _submit(psp, prefix, 12)
    every = [r for mine in refs.values() for r in mine]
    finished: dict[str, float] = {}
    by_cred = {
        cred: [r for code, mine in refs.items() if SERVED_BY[code] == cred for r in mine]
        for cred in psp.sandboxes
    }

    def done() -> bool:
        for cred, mine in by_cred.items():
            if cred not in finished and all(r.is_final for r in psp.ledger.get_many(mine)):
                finished[cred] = time.monotonic() - start
        return len(finished) == len(by_cred)

    wait_until(done, 180, interval=0.1, what="every refund final")
    assert {r.state for r in psp.ledger.get_many(every)} == {State.COMPLETED}
    for cred, admin in psp.sandboxes.items():
        counters = admin.counters(prefix)
        calls = sum(counters["calls"].values())
        rate = calls / finished[cred]
        print(f"{cred}: {calls} calls in {finished[cred]:.2f}s = {rate:.2f}/s ({RATES[cred]})")
        assert counters["faults"].get("rate_limited", 0) == 0, counters["faults"]
        assert rate <= RATES[cred] * 1.05, (cred, calls, finished[cred])
        assert calls >= len(by_cred[cred]) * 3


def _event(ref: str, refund_id: str, participant: str, nid: str) -> bytes:
    data = {
        "cryptoRefundId": refund_id,
        "clientReference": ref,
        "status": 4,  # failed: a change no refund of this test may take from this delivery
        "participantCode": participant,
    }
    body = {"notificationId": nid, "eventType": "crypto.refund.updated", "data": data}
    return json.dumps(body).encode()


def _post_hook(psp: Psp, cred: str, body: bytes, secret: str) -> requests.Response:
    stamp = str(time.time_ns() // 1_000_000)
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return requests.post(
        f"{psp.web}/webhooks/mce/{cred}",
        data=body,
        timeout=10,
        headers={"Content-Type": "application/json", "X-Signature": f"t={stamp},v0={mac}"},
    )


def _metric(psp: Psp, name: str) -> dict[str, float]:
    """``label value -> sample`` of a one-label metric on /metrics."""
    text = requests.get(f"{psp.web}/metrics", timeout=10).text
    found = re.findall(rf'^{name}{{\w+="([^"]*)"}} (\S+)$', text, flags=re.MULTILINE)
    return {label: float(value) for label, value in found}


def _mismatches(psp: Psp) -> float:
    return _metric(psp, "refunds_webhooks_total").get("participant_mismatch", 0.0)


def test_a_webhook_naming_another_credentials_participant_is_refused_and_counted(
    psp: Psp, prefix: str
) -> None:
    _reset(psp)
    refs = _submit(psp, prefix, 1)
    every = [r for mine in refs.values() for r in mine]
    wait_final(psp.ledger, every, 60)
    victim = psp.ledger.get(refs["SHOP-B1"][0])
    assert victim.state == State.COMPLETED and victim.crypto_refund_id
    before = _mismatches(psp)
    nid = f"{prefix}-forged-1"
    # Alpha's login, correctly signed, speaking of beta's merchant's refund.
    body = _event(victim.client_reference, victim.crypto_refund_id, "SHOP-B1", nid)
    answer = _post_hook(psp, "alpha", body, HOOK_SECRETS["alpha"])
    assert answer.status_code == 403, answer.text
    assert "SHOP-B1 does not belong to credential alpha" in answer.text
    stored = EventStore.of(psp.ledger).get(nid)
    assert stored["status"] == "refused"
    assert json.loads(stored["body"]) == json.loads(body)  # kept raw
    wait_until(lambda: _mismatches(psp) == before + 1, 10, what="the mismatch counted")
    assert psp.ledger.get(victim.client_reference).state == State.COMPLETED  # untouched
    # Without a participantCode, the refund it names says whose it is.
    silent = json.loads(_event(victim.client_reference, victim.crypto_refund_id, "X", f"{nid}-s"))
    del silent["data"]["participantCode"]
    quiet = json.dumps(silent).encode()
    assert _post_hook(psp, "alpha", quiet, HOOK_SECRETS["alpha"]).status_code == 403
    # The address checks the signature with its own credential's secrets only.
    own = _event(victim.client_reference, victim.crypto_refund_id, "SHOP-B1", f"{nid}-2")
    assert _post_hook(psp, "beta", own, HOOK_SECRETS["alpha"]).status_code == 401
    # Both secrets of beta's rotation are accepted (a final refund: nothing changes).
    for i, secret in enumerate(("beta-hook-secret", "beta-hook-secret-next")):
        again = _event(victim.client_reference, victim.crypto_refund_id, "SHOP-B1", f"{nid}-r{i}")
        assert _post_hook(psp, "beta", again, secret).status_code < 300
    assert _post_hook(psp, "gamma", own, HOOK_SECRETS["alpha"]).status_code == 404


def test_a_scoped_intake_key_submits_and_sees_only_its_participants_refunds(
    psp: Psp, prefix: str
) -> None:
    _reset(psp)
    refs = _submit(psp, prefix, 2)
    mine, theirs = refs["SHOP-A1"][0], refs["SHOP-B1"][0]
    http = requests.Session()

    def intent(ref: str, code: str | None) -> dict[str, object]:
        body: dict[str, object] = {
            "originalTransactionType": 1,
            "originalTransactionId": f"tx-{ref}",
            "clientReference": ref,
        }
        if code is not None:
            body["participantCode"] = code
        return body

    url = f"{psp.web}/refunds"
    psp.sandboxes["beta"].flag([f"tx-{prefix}b-new"])
    refused = http.post(url, json=intent(f"{prefix}b-new", "SHOP-B1"), headers=SHOP_A1_KEY)
    assert refused.status_code == 403, refused.text
    assert psp.ledger.find(f"{prefix}b-new") is None  # nothing written
    unknown = http.post(url, json=intent(f"{prefix}x-new", "SHOP-ZZ"), headers=API_KEY)
    assert unknown.status_code == 422, unknown.text
    assert "participantCode" in unknown.text
    psp.sandboxes["alpha"].flag([f"tx-{prefix}a-new"])
    made = http.post(url, json=intent(f"{prefix}a-new", None), headers=SHOP_A1_KEY)
    assert made.status_code == 201, made.text  # the default participant, SHOP-A1: its own
    assert psp.ledger.get(f"{prefix}a-new").participant is None

    assert http.get(f"{url}/{mine}", headers=SHOP_A1_KEY).status_code == 200
    assert http.get(f"{url}/{theirs}", headers=SHOP_A1_KEY).status_code == 404
    assert http.get(f"{url}/{theirs}", headers=API_KEY).status_code == 200

    def listed(headers: dict[str, str], **params: str) -> set[str]:
        page = http.get(url, params={"limit": "500", **params}, headers=headers).json()
        return {r["clientReference"] for r in page["items"] if r["clientReference"] in every}

    every = {r for rs in refs.values() for r in rs} | {f"{prefix}a-new"}
    assert listed(SHOP_A1_KEY) == set(refs["SHOP-A1"]) | {f"{prefix}a-new"}
    assert listed(API_KEY, participant="SHOP-B1") == set(refs["SHOP-B1"])
    assert listed(SHOP_A1_KEY, participant="SHOP-B1") == set()
    wait_final(psp.ledger, sorted(every), 60)
    # The metric's participant label: the registry's codes, nothing else.
    submitted = _metric(psp, "refunds_participant_submitted_total")
    assert set(submitted) == {"SHOP-A1", "SHOP-A2", "SHOP-B1"}
    assert submitted["SHOP-B1"] >= 2
    assert submitted["SHOP-A1"] >= 3  # its two and the scoped key's, without participantCode
