"""Configuration at start, as a user meets it: the CLI, the web app (``refunds web``), a Celery
worker and beat each stop with exit 2 and one line that names every broken rule; bare and
lower-case variable names change nothing; the sandbox's implicit Redis is never silent.

Real processes with a controlled environment. Nothing here reaches a Redis: every case stops at
the settings, before a connection (``REDIS_URL`` points at port 1 where one is needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.processes import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NOWHERE = "redis://127.0.0.1:1/0"  # never reached: the settings stop every process first
PROD = {
    "MCE_BASE_URL": "https://mce.example",
    "MCE_CLIENT_ID": "merchant-1",
    "MCE_CLIENT_SECRET": "s3cr3t-value-abc",
    "MCE_WEBHOOK_SECRET": "whsec-value-xyz",
    "REDIS_URL": NOWHERE,
}

ENTRY_POINTS = {
    "cli": [sys.executable, "-m", "refunds.cli", "status", "any-ref"],
    "web": [sys.executable, "-m", "refunds.cli", "web", "--port", "0"],
    "worker": [str(BIN / "celery"), "-A", "worker.app", "worker", "--concurrency", "1"],
    "beat": [str(BIN / "celery"), "-A", "worker.app", "beat"],
}

BROKEN = {
    "redis_url_without_scheme": (
        {"REFUNDS_PROFILE": "sandbox", "REDIS_URL": "127.0.0.1:6379"},
        ["REDIS_URL: has no scheme"],
    ),
    "redis_url_http": (
        {"REFUNDS_PROFILE": "sandbox", "REDIS_URL": "http://127.0.0.1:6379/0"},
        ["REDIS_URL: uses http://"],
    ),
    "four_timing_rules": (
        {
            "REFUNDS_PROFILE": "sandbox",
            "REDIS_URL": NOWHERE,
            "REFUNDS_HTTP_READ_TIMEOUT": "50",
            "REFUNDS_TASK_SOFT_TIME_LIMIT": "70",
            "REFUNDS_TASK_TIME_LIMIT": "60",
            "REFUNDS_LEASE_SECONDS": "40",
            "REFUNDS_STEP_LEASE_SECONDS": "45",
        },
        [
            "must fit under REFUNDS_TASK_SOFT_TIME_LIMIT",
            "REFUNDS_TASK_SOFT_TIME_LIMIT must be below REFUNDS_TASK_TIME_LIMIT",
            "REFUNDS_LEASE_SECONDS must exceed REFUNDS_TASK_TIME_LIMIT",
            "REFUNDS_STEP_LEASE_SECONDS must be below REFUNDS_LEASE_SECONDS",
        ],
    ),
    "currency_named_twice": (
        {"REFUNDS_PROFILE": "sandbox", "REDIS_URL": NOWHERE},
        ["REFUNDS_APPROVAL_THRESHOLDS: names USDT twice ('USDT' and 'usdt')"],
    ),
    "production_rules_and_a_malformed_field": (
        {
            **PROD,
            "REDIS_URL": "redis://127.0.0.1:1/zero",
            "MCE_BASE_URL": "http://mce.example",
            "REFUNDS_WEBHOOK_TOLERANCE_SECONDS": "86400",
            "REFUNDS_TOKEN_LOCK_SECONDS": "5",
            "REFUNDS_TOKEN_WAIT_SECONDS": "5",
        },
        [
            "REDIS_URL: names a database that is not a number",
            "MCE_BASE_URL must be https:// in production",
            "REFUNDS_WEBHOOK_TOLERANCE_SECONDS must be at most 600 in production",
            "REFUNDS_TOKEN_LOCK_SECONDS (5 s) must exceed one token fetch",
            "REFUNDS_TOKEN_WAIT_SECONDS (5 s) must be at least one token fetch",
        ],
    ),
}
BROKEN["currency_named_twice"][0]["REFUNDS_APPROVAL_THRESHOLDS"] = "USDT=1000,usdt=1000000"


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any setting of ours (any case), plus ``extra``."""
    ours = ("REFUNDS_", "MCE_", "REDIS_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ours)}
    return {**env, **extra}


def run(
    command: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("case", list(BROKEN))
def test_every_entry_point_names_every_broken_rule_on_one_line_and_exits_2(
    entry: str, case: str
) -> None:
    extra, fragments = BROKEN[case]
    proc = run(ENTRY_POINTS[entry], clean_env(extra))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("refunds: invalid configuration: ")
    for fragment in fragments:
        assert fragment in lines[0], fragment


def test_a_bare_api_key_does_not_start_the_production_web_app() -> None:
    env = clean_env(
        {
            **PROD,
            "API_KEY": "another-services-key-123",
            "api_key": "another-services-key-456",
            "refunds_api_key": "another-services-key-789",
        }
    )
    proc = run([*ENTRY_POINTS["web"][:-1], str(free_port())], env, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "REFUNDS_API_KEY is not set" in proc.stderr


@pytest.mark.parametrize("name", ["PROFILE", "profile", "refunds_profile", "Refunds_Profile"])
def test_only_refunds_profile_turns_on_the_sandbox(name: str) -> None:
    proc = run([sys.executable, "-m", "refunds.cli", "submit"], clean_env({name: "sandbox"}))
    assert proc.returncode == 2
    assert "invalid configuration: MCE_BASE_URL is not set" in proc.stderr


DUMP = (
    "import json; from pydantic import SecretStr; from config.settings import load_settings;"
    "s = load_settings(); print(json.dumps({k: v.get_secret_value() if isinstance(v, SecretStr)"
    " else v for k, v in s.model_dump().items()}, default=str, sort_keys=True))"
)


def test_every_bare_and_lower_case_name_changes_nothing_in_a_process() -> None:
    baseline_env = clean_env({**PROD, "REFUNDS_API_KEY": "a-real-intake-key-1"})
    names = json.loads(
        run(
            [
                sys.executable,
                "-c",
                "import json; from config.settings import env_names as n; print(json.dumps(n()))",
            ],
            baseline_env,
        ).stdout
    )
    decoys: dict[str, str] = {}
    for documented in (n for ns in names.values() for n in ns):
        bare = documented.removeprefix("REFUNDS_")
        for variant in {documented.lower(), bare, bare.lower(), documented.title()} - {documented}:
            decoys[variant] = "sandbox" if "PROFILE" in documented else "7"
    assert {"API_KEY", "PROFILE", "OPERATOR_API_KEY", "MAX_BODY_BYTES", "refunds_profile"} <= set(
        decoys
    )
    baseline = run([sys.executable, "-c", DUMP], baseline_env)
    decoyed = run([sys.executable, "-c", DUMP], {**baseline_env, **decoys})
    assert baseline.returncode == 0, baseline.stderr
    assert decoyed.returncode == 0, decoyed.stderr
    assert json.loads(decoyed.stdout) == json.loads(baseline.stdout)
    assert json.loads(baseline.stdout)["profile"] == "production"


def test_the_sandbox_says_which_redis_it_falls_back_to() -> None:
    notice = (
        "refunds: notice: REDIS_URL is not set; the sandbox profile uses redis://127.0.0.1:6379/0"
    )
    # `refunds submit` without arguments loads the settings, then stops at its usage error: it
    # never reaches a Redis (the machine's shared one is not ours to touch).
    cli = [sys.executable, "-m", "refunds.cli", "submit"]
    proc = run(cli, clean_env({"REFUNDS_PROFILE": "sandbox"}))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == notice
    assert proc.stderr.count("notice:") == 1
    configured = run(cli, clean_env({"REFUNDS_PROFILE": "sandbox", "REDIS_URL": NOWHERE}))
    assert configured.returncode == 2 and "notice:" not in configured.stderr
    worker = run(
        [sys.executable, "-c", "import worker.app"], clean_env({"REFUNDS_PROFILE": "sandbox"})
    )
    assert worker.returncode == 0, worker.stderr
    assert notice in worker.stderr.splitlines()


def test_production_never_falls_back_to_an_implicit_redis() -> None:
    env = clean_env({k: v for k, v in PROD.items() if k != "REDIS_URL"})
    proc = run([sys.executable, "-m", "refunds.cli", "submit"], env)
    assert proc.returncode == 2
    assert "REDIS_URL is not set" in proc.stderr and "notice:" not in proc.stderr
