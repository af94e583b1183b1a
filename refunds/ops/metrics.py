"""Prometheus metrics, read from the shared Redis counters at scrape time.

Workers on many machines all add to the same Redis counters (``refunds.ops.counters``), so any web
process can serve the whole cluster's numbers: refunds by state, provider calls and latency by
operation and outcome, webhook outcomes, timer lag and backlog, the scheduler's last tick, outbox
size and dead letters, conflicts, the oldest refund in flight and whether MCE refuses our
credentials.

A scrape costs the same whatever the number of refunds: every value is a counter, a set's or
zset's size, or the first member of a sorted index (``rp:timers``, ``rp:inflight``), kept up to
date by the writes themselves; nothing is counted or scanned here. The thresholds live in the
alert rules (``deploy/prometheus/rules.yml``), not in the app: ``refunds_age_alert`` (the app's
own threshold, ``REFUNDS_AGE_ALERT_AFTER``) is deprecated, kept one release for dashboards that
read it; alert on ``refunds_oldest_in_flight_age_seconds`` instead.
"""

from __future__ import annotations

import math
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
from refunds.ops.counters import LATENCY_BUCKETS, Stats
from refunds.ops.participant_metrics import participant_families
from refunds.ops.snapshot import oldest_in_flight_age
from refunds.store.archive_queue import ArchiveQueue
from refunds.store.inflight import InFlight
from refunds.store.pacing import credentials_refused_since

#: Every metric family ``/metrics`` serves (the dashboard test and the rules' tests check their
#: queries against a real scrape; this list is what the docs name).
EXPORTED = (
    "refunds_by_state",
    "refunds_provider_calls_total",
    "refunds_provider_latency_seconds",
    "refunds_webhooks_total",
    "refunds_conflicts",
    "refunds_conflicts_seen_total",
    "refunds_timer_lag_seconds",
    "refunds_timers",
    "refunds_scheduler_last_tick_age_seconds",
    "refunds_outbox",
    "refunds_notifications_dead",
    "refunds_token_fetches_total",
    "refunds_in_flight",
    "refunds_in_flight_unindexed",
    "refunds_oldest_in_flight_age_seconds",
    "refunds_age_alert",
    "refunds_archive_queue",
    "refunds_archive_lag_seconds",
    "refunds_mce_credentials_refused",
    "refunds_kyt_rule_matches_total",
    "refunds_kyt_unmapped_total",
    "refunds_kyt_denied_total",
    "refunds_kyt_unreadable_total",
    # With a registry file only (refunds.ops.participant_metrics): refunds_participant_submitted,
    # refunds_participant_paused, refunds_credential_refused.
)


class RedisCollector(Collector):
    def __init__(self, p: Context) -> None:
        self.p = p

    def collect(self) -> Iterator[Metric]:
        yield from self._refunds()
        yield from _provider(self.p.stats)
        yield from self._scheduler()
        yield from self._attention()
        yield from _kyt_metrics(self.p)

    def _refunds(self) -> Iterator[Metric]:
        ledger = self.p.ledger
        by_state = GaugeMetricFamily("refunds_by_state", "Refunds in each state", labels=["state"])
        for state, n in ledger.counts().items():
            by_state.add_metric([state], n)
        yield by_state
        index = InFlight(ledger.redis)
        age = oldest_in_flight_age(ledger)
        yield GaugeMetricFamily(
            "refunds_in_flight",
            "Refunds the pipeline is moving (not final, not held)",
            value=index.count(),
        )
        yield GaugeMetricFamily(
            "refunds_in_flight_unindexed",
            "Refunds in flight missing from the in-flight index (run refunds index-inflight)",
            value=index.unindexed(),
        )
        yield GaugeMetricFamily(
            "refunds_oldest_in_flight_age_seconds",
            "Age of the oldest refund the pipeline is still moving (0 when none)",
            value=age,
        )
        after = self.p.settings.age_alert_after
        yield GaugeMetricFamily(
            "refunds_age_alert",
            "DEPRECATED (alert on refunds_oldest_in_flight_age_seconds): 1 when a refund in "
            f"flight is older than REFUNDS_AGE_ALERT_AFTER ({after:.0f} s)",
            value=1.0 if age > after else 0.0,
        )

    def _scheduler(self) -> Iterator[Metric]:
        ledger = self.p.ledger
        yield GaugeMetricFamily(
            "refunds_timer_lag_seconds",
            "How far the most overdue refund timer is past due",
            value=ledger.timer_lag(),
        )
        yield GaugeMetricFamily(
            "refunds_timers", "Refunds with a pending timer", value=ledger.timer_count()
        )
        since = ledger.since_last_tick()
        yield GaugeMetricFamily(
            "refunds_scheduler_last_tick_age_seconds",
            "Seconds since the scheduler's last tick (+Inf: never; beat sends one a second)",
            value=math.inf if since is None else since,
        )

    def _attention(self) -> Iterator[Metric]:
        ledger, stats = self.p.ledger, self.p.stats
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
        yield GaugeMetricFamily(
            "refunds_conflicts",
            "Refunds whose provider contradiction no operator has acknowledged yet (refunds "
            "conflicts list; refunds conflicts ack)",
            value=ledger.conflict_count(),
        )
        kinds = CounterMetricFamily(
            "refunds_conflicts_seen",
            "MCE news that contradicted a final state, by kind (e.g. completed_after_cancelled)",
            labels=["kind"],
        )
        for kind, n in sorted(stats.conflicts().items()):
            kinds.add_metric([kind], n)
        yield kinds
        lag = ArchiveQueue(ledger.redis).lag()
        yield GaugeMetricFamily(
            "refunds_archive_queue",
            "Changes queued in Redis, not yet in the SQL archive (archive lag, entries)",
            value=lag.length,
        )
        yield GaugeMetricFamily(
            "refunds_archive_lag_seconds",
            "Age of the oldest change not yet in the SQL archive (0 when none)",
            value=lag.oldest_age,
        )
        yield GaugeMetricFamily(
            "refunds_mce_credentials_refused",
            "1 while the MCE token endpoint refuses our credentials (provider calls paused)",
            value=0.0 if credentials_refused_since(ledger.redis) is None else 1.0,
        )
        yield from participant_families(self.p)  # a registry file's deployments only


def _provider(stats: Stats) -> Iterator[Metric]:
    calls = CounterMetricFamily(
        "refunds_provider_calls",
        "MCE calls by operation and outcome (HTTP status, timeout, connection, throttled)",
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
        "refunds_webhooks",
        "MCE webhooks by outcome (rejected_401: a bad or missing signature)",
        labels=["outcome"],
    )
    for outcome, n in sorted(stats.webhooks().items()):
        hooks.add_metric([outcome], n)
    yield hooks
    yield CounterMetricFamily(
        "refunds_token_fetches", "Bearer tokens fetched from MCE", value=stats.token_fetches()
    )


def _kyt_metrics(p: Context) -> Iterator[Metric]:
    """KYT intake: rule matches by rule, action and mode (labels: the loaded rules file's ids
    only, so a file's history cannot grow the label set), and the alerts' counters."""
    store = p.kyt.store
    ids = set(p.kyt.rules.ids) if p.kyt.rules is not None else set()
    matches = CounterMetricFamily(
        "refunds_kyt_rule_matches",
        "KYT rule matches by rule, action and mode (shadow: recorded, nothing done)",
        labels=["rule", "action", "mode"],
    )
    for (rule, action, mode), n in sorted(store.matches().items()):
        if rule in ids:
            matches.add_metric([rule, action, mode], n)
    yield matches
    alerts = store.alerts()
    yield CounterMetricFamily(
        "refunds_kyt_unmapped",
        "Flagged payments whose kytResult the settings do not map (denied; alert)",
        value=alerts.get("unmapped", 0),
    )
    yield CounterMetricFamily(
        "refunds_kyt_denied",
        "Flagged payments never refunded automatically: deny list or unmapped kytResult",
        value=alerts.get("denied", 0),
    )
    yield CounterMetricFamily(
        "refunds_kyt_unreadable",
        "Flagged payments without a usable transaction id (nothing done; alert)",
        value=alerts.get("unreadable", 0),
    )


def render_metrics(p: Context) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(p))
    return generate_latest(registry), CONTENT_TYPE_LATEST
