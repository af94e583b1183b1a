"""Write the refund pipeline's Grafana dashboard (``dashboards/refunds.json``) from one source.

Run ``python deploy/grafana/dashboard.py`` after changing a panel here, and commit both files:
``tests/integration/test_monitoring.py`` fails when the JSON is stale, when a panel's query does
not parse (``promtool``) and when a query names a metric the app does not serve (a real scrape).
The panels follow the runbook's questions: where do the refunds stand, is anything stuck, is the
provider unhappy, is anything lost. Grafana reads the file through the compose file's
provisioning (``deploy/grafana/provisioning``), with the Prometheus datasource of uid
``prometheus``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "refunds.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
ERRORS = 'outcome=~"5..|timeout|connection"'


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    kind: str = "timeseries"  # or "stat"
    unit: str = "short"
    width: int = 8
    description: str = ""
    thresholds: tuple[float, ...] = field(default=())  # red from the first (stat panels)


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Where the refunds stand",
        (
            Panel("In flight", (("refunds_in_flight", "in flight"),), "stat", width=4),
            Panel(
                "Needs attention",
                (('refunds_by_state{state="needs_attention"}', "needs attention"),),
                "stat",
                width=4,
                thresholds=(1,),
                description="Refunds stopped for a human: the console's needs-attention page.",
            ),
            Panel(
                "Awaiting approval",
                (('refunds_by_state{state="awaiting_approval"}', "awaiting approval"),),
                "stat",
                width=4,
            ),
            Panel(
                "Oldest in flight",
                (("refunds_oldest_in_flight_age_seconds", "age"),),
                "stat",
                unit="s",
                width=4,
                thresholds=(3600,),
                description="Alert RefundsInFlightTooLong above an hour.",
            ),
            Panel(
                "Conflicts",
                (("refunds_conflicts", "conflicts"),),
                "stat",
                width=4,
                thresholds=(1,),
            ),
            Panel(
                "Dead letters",
                (("refunds_notifications_dead", "dead"),),
                "stat",
                width=4,
                thresholds=(1,),
            ),
            Panel(
                "Refunds by state",
                (("sum by (state) (refunds_by_state)", "{{state}}"),),
                width=24,
            ),
        ),
    ),
    (
        "Is anything stuck",
        (
            Panel(
                "Timer lag",
                (("refunds_timer_lag_seconds", "lag"),),
                unit="s",
                description="How far the most overdue refund timer is past due.",
            ),
            Panel(
                "Since the last scheduler tick",
                (("refunds_scheduler_last_tick_age_seconds", "since last tick"),),
                unit="s",
            ),
            Panel(
                "Pending timers and outbox",
                (("refunds_timers", "timers"), ("refunds_outbox", "outbox")),
            ),
        ),
    ),
    (
        "Is the provider unhappy",
        (
            Panel(
                "MCE calls by outcome",
                (
                    (
                        "sum by (outcome) (rate(refunds_provider_calls_total[5m]))",
                        "{{outcome}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "MCE error ratio",
                (
                    (
                        f"sum(rate(refunds_provider_calls_total{{{ERRORS}}}[5m]))"
                        ' / sum(rate(refunds_provider_calls_total{outcome!="throttled"}[5m]))',
                        "errors",
                    ),
                ),
                unit="percentunit",
                description="Alert RefundsProviderErrorRatio above 20% for 10 minutes.",
            ),
            Panel(
                "MCE latency p95",
                (
                    (
                        "histogram_quantile(0.95, sum by (le, operation) "
                        "(rate(refunds_provider_latency_seconds_bucket[5m])))",
                        "{{operation}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Credentials refused",
                (("refunds_mce_credentials_refused", "refused"),),
                "stat",
                thresholds=(1,),
            ),
            Panel(
                "Token fetches",
                (("rate(refunds_token_fetches_total[5m])", "fetches"),),
                unit="reqps",
            ),
            Panel(
                "Conflicts seen by kind",
                (("sum by (kind) (increase(refunds_conflicts_seen_total[1h]))", "{{kind}}"),),
            ),
        ),
    ),
    (
        "Webhooks",
        (
            Panel(
                "Webhooks by outcome",
                (("sum by (outcome) (rate(refunds_webhooks_total[5m]))", "{{outcome}}"),),
                unit="reqps",
                width=12,
                description="rejected_401: a missing or wrong signature.",
            ),
            Panel(
                "Refunds missing from the in-flight index",
                (("refunds_in_flight_unindexed", "unindexed"),),
                "stat",
                width=12,
                thresholds=(1,),
                description="Above 0 after an upgrade: run refunds index-inflight.",
            ),
        ),
    ),
)


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    height = 4 if panel.kind == "stat" else 8
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": "red", "value": t} for t in panel.thresholds]
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": DATASOURCE,
            }
            for i, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y, x, tallest = pid + 1, y + 1, 0, 0
        for panel in row:
            if x + panel.width > 24:
                x, y, tallest = 0, y + tallest, 0
            built = _panel(panel, pid, x, y)
            panels.append(built)
            tallest = max(tallest, built["gridPos"]["h"])
            pid, x = pid + 1, x + panel.width
        y += tallest
    return {
        "uid": "refunds",
        "title": "Refund pipeline",
        "description": "Generated by deploy/grafana/dashboard.py: edit that, not this file.",
        "tags": ["refunds"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
