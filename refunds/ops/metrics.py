"""Prometheus metrics, read from the shared Redis counters at scrape time.

Workers on many machines all add to the same Redis counters (``refunds.ops.counters``), so any web
process can serve the whole cluster's numbers: refunds by state, provider calls and latency by
operation and outcome, webhook outcomes, timer lag and backlog, outbox size and dead letters, the
age alert (oldest refund in flight) and whether MCE refuses our credentials.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from refunds.context import Context
from refunds.ops.counters import LATENCY_BUCKETS
from refunds.ops.participant_metrics import participant_families
from refunds.ops.snapshot import oldest_in_flight_age
from refunds.store.pacing import credentials_refused_since


class RedisCollector(Collector):
    def __init__(self, p: Context) -> None:
        self.p = p

    def collect(self) -> Iterator[Metric]:
        ledger, stats = self.p.ledger, self.p.stats
        by_state = GaugeMetricFamily("refunds_by_state", "Refunds in each state", labels=["state"])
        for state, n in ledger.counts().items():
            by_state.add_metric([state], n)
        yield by_state

        calls = CounterMetricFamily(
            "refunds_provider_calls",
            "MCE calls by operation and outcome",
            labels=["operation", "outcome"],
        )
        for (operation, outcome), n in sorted(stats.calls().items()):
            calls.add_metric([operation, outcome], n)
        yield calls

        latency = HistogramMetricFamily(
            "refunds_provider_latency_seconds",
            "MCE call latency by operation",
            labels=["operation"],
        )
        for operation, buckets in sorted(stats.latency().items()):
            cumulative, out = 0.0, []
            for bound in LATENCY_BUCKETS:
                cumulative += buckets.get(repr(bound), 0)
                out.append((repr(bound), cumulative))
            cumulative += buckets.get("+Inf", 0)
            out.append(("+Inf", cumulative))
            latency.add_metric([operation], out, buckets.get("sum", 0.0))
        yield latency

        hooks = CounterMetricFamily(
            "refunds_webhooks", "MCE webhooks by outcome", labels=["outcome"]
        )
        for outcome, n in sorted(stats.webhooks().items()):
            hooks.add_metric([outcome], n)
        yield hooks

        yield GaugeMetricFamily(
            "refunds_timer_lag_seconds",
            "How far the most overdue refund timer is past due",
            value=ledger.timer_lag(),
        )
        yield GaugeMetricFamily(
            "refunds_timers", "Refunds with a pending timer", value=ledger.timer_count()
        )
        yield GaugeMetricFamily(
            "refunds_outbox",
            "Outcome notifications not yet delivered",
            value=ledger.outbox_count(),
        )
        yield GaugeMetricFamily(
            "refunds_notifications_dead",
            "Outcome notifications given up on and not replayed (refunds notifications dead)",
            value=self.p.outbox.dead_count(),
        )
        yield CounterMetricFamily(
            "refunds_token_fetches", "Bearer tokens fetched from MCE", value=stats.token_fetches()
        )
        after = self.p.settings.age_alert_after
        age = oldest_in_flight_age(ledger)
        yield GaugeMetricFamily(
            "refunds_oldest_in_flight_age_seconds",
            "Age of the oldest refund the pipeline is still moving (0 when none)",
            value=age,
        )
        yield GaugeMetricFamily(
            "refunds_age_alert",
            f"1 when a refund in flight is older than REFUNDS_AGE_ALERT_AFTER ({after:.0f} s)",
            value=1.0 if age > after else 0.0,
        )
        yield GaugeMetricFamily(
            "refunds_mce_credentials_refused",
            "1 while the MCE token endpoint refuses our credentials (provider calls paused)",
            value=0.0 if credentials_refused_since(ledger.redis) is None else 1.0,
        )
        yield from participant_families(self.p)  # a registry file's deployments only


def render_metrics(p: Context) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(p))
    return generate_latest(registry), CONTENT_TYPE_LATEST
