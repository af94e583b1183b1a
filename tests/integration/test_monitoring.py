"""Monitoring as shipped: /metrics behind its token, the alert rules, the dashboard, compose.

A real ``refunds web`` on a private Redis is scraped over HTTP; the metric names it serves are the
reference every rule and every dashboard query is checked against. ``promtool`` (Debian's
``prometheus`` package, in CI's apt list) checks and unit-tests the rules and parses each panel's
query; the tests that need it skip, saying so, where it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devstack.localstack import wait_until
from devstack.processes import Child, free_port, start_redis, start_web
from refunds.ops.metrics import EXPORTED
from tests.integration.test_stats import cli_env

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "refunds.json"
GENERATOR = REPO / "deploy" / "grafana" / "dashboard.py"
RUNBOOK = REPO / "docs" / "operator-runbook.md"
TOKEN = "metrics-token-for-the-test-0123456789"
METRIC = re.compile(r"\brefunds_[a-zA-Z0-9_]+")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)"
)


@pytest.fixture(scope="module")
def web_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two ``refunds web`` on one private Redis: one with REFUNDS_METRICS_TOKEN, one without."""
    workdir = tmp_path_factory.mktemp("monitoring")
    redis_child, url = start_redis(workdir / "redis", appendonly=False)
    children: list[Child] = [redis_child]
    try:
        urls = []
        for name, extra in (("web-token", {"REFUNDS_METRICS_TOKEN": TOKEN}), ("web-open", {})):
            port = free_port()
            children.append(start_web(workdir, {**cli_env(url), **extra}, port=port, name=name))
            base = f"http://127.0.0.1:{port}"
            wait_until(
                lambda b=base: requests.get(b + "/healthz", timeout=2).ok, 60, name, children[-1]
            )
            urls.append(base)
        yield urls[0], urls[1]
    finally:
        for child in reversed(children):
            child.stop()


@pytest.fixture(scope="module")
def exported(web_pair: tuple[str, str]) -> set[str]:
    """Every sample name a real scrape can carry (a family with no sample yet still counts)."""
    body = requests.get(
        web_pair[0] + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ).text
    names: set[str] = set()
    for family in text_string_to_metric_families(body):
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
        }.get(family.type, ("",))
        names.update(family.name + s for s in suffixes)
    return names


# --- /metrics -----------------------------------------------------------------------------------


def test_metrics_with_a_token_set_refuses_a_scrape_without_it(web_pair: tuple[str, str]) -> None:
    url = web_pair[0] + "/metrics"
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-wrong-token-wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "refunds_by_state" not in answer.text
        assert TOKEN not in answer.text
    ok = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert ok.status_code == 200
    assert "refunds_by_state" in ok.text
    assert requests.get(web_pair[0] + "/healthz", timeout=10).status_code == 200  # still open


def test_metrics_without_a_token_set_stays_open(web_pair: tuple[str, str]) -> None:
    answer = requests.get(web_pair[1] + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert "refunds_oldest_in_flight_age_seconds" in answer.text


def test_the_documented_list_is_what_a_scrape_serves(exported: set[str]) -> None:
    """``refunds.ops.metrics.EXPORTED`` (what the runbook names) is exactly what is served."""
    families = {re.sub(r"_(total|created|bucket|sum|count)$", "", n) for n in exported}
    assert families == {n.removesuffix("_total") for n in EXPORTED}


# --- alert rules --------------------------------------------------------------------------------


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_summary_and_a_runbook_section_that_exists() -> None:
    runbook = RUNBOOK.read_text()
    alerts = _alerts()
    assert len(alerts) >= 10
    for rule in alerts:
        notes = rule["annotations"]
        assert notes["summary"].strip(), rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operator-runbook.md", rule["alert"]
        assert f"### {rule['alert']} {{#{anchor}}}" in runbook, rule["alert"]
        assert rule["labels"]["severity"] in {"page", "ticket"}


def test_every_metric_an_alert_reads_is_one_the_app_serves(exported: set[str]) -> None:
    for rule in _alerts():
        names = set(METRIC.findall(rule["expr"]))
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names <= fired, names - fired
    assert names <= quiet, names - quiet


def _promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules_and_the_prometheus_config() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = _promtool("check", "config", "--syntax-only", str(PROMETHEUS_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass() -> None:
    tested = _promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


# --- the dashboard ------------------------------------------------------------------------------


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("refunds_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def test_the_dashboard_file_is_what_its_generator_writes() -> None:
    assert DASHBOARD.read_text() == _generator().render(), (
        "deploy/grafana/dashboards/refunds.json is stale: run python deploy/grafana/dashboard.py"
    )


def test_every_panel_queries_metrics_the_app_serves(exported: set[str]) -> None:
    queries = _queries()
    assert len(queries) >= 15
    for title, expr in queries:
        names = set(METRIC.findall(expr))
        assert names, title
        assert names <= exported, (title, names - exported)


@needs_promtool
def test_every_panel_query_parses(tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = _promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_broken_panel_query_is_caught(tmp_path: Path) -> None:
    """The parse check can fail: promtool refuses an unbalanced query (skips without promtool)."""
    if PROMTOOL is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    path = tmp_path / "broken.yml"
    broken = {"record": "dashboard:broken", "expr": "sum(rate(refunds_webhooks_total[5m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [broken]}]}))
    assert _promtool("check", "rules", str(path)).returncode != 0


# --- compose ------------------------------------------------------------------------------------


def test_compose_runs_prometheus_with_the_rules_and_grafana_with_the_dashboard() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in prometheus["volumes"]
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in prometheus["volumes"]
    )
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    for service in (prometheus, grafana):
        assert all(str(p).startswith("127.0.0.1:") for p in service["ports"])
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["rules.yml"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["web:8000"]
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed: compose validation skipped")
    checked = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config", "-q"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "REFUNDS_ENV_FILE": ".env.example"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
