"""Benchmark 7: what ``WAIT`` for a replica adds to one submit (issue 8, durability).

A primary and a replica (``devstack.sentinel``: real ``redis-server`` processes on 127.0.0.1, the
replica in sync, three Sentinels watching; the producer talks to the primary found through
Sentinel, as a deployment with ``REDIS_SENTINELS`` does). The same one-intent ``Producer.submit``
is timed with ``REFUNDS_MIN_REPLICA_ACKS=0`` (answer after the primary's write) and ``=1`` (answer
after one replica has it: an INCR of the probe key and ``WAIT 1 <timeout>`` on one connection,
``refunds.store.connection.ensure_durable``), alternating in rounds so machine noise hits both.
Nothing consumes the queue meanwhile. Both nodes have AOF with ``appendfsync always`` (as
devstack.sentinel starts them), so the figure includes the replica's fsync, as it would in
production with that setting.
"""

from __future__ import annotations

import time

from bench.common import Figure, Plan, Result, intents, percentile, refs
from bench.stack import BenchStack
from config.settings import load_settings
from devstack.sentinel import sentinel_cluster
from refunds.producer import Producer

ROUNDS = 4


def _timed_submits(producer: Producer, names: list[str]) -> list[float]:
    took: list[float] = []
    for intent in intents(names):
        started = time.perf_counter()
        producer.submit(intent)
        took.append(time.perf_counter() - started)
    return took


def durability(stack: BenchStack, plan: Plan) -> Result:
    per_round = max(50, plan.submit_intents // 20 // ROUNDS)  # 250 (full) / 62 (quick) a round
    result = Result("durability", "7. Latency WAIT adds to a submit (MIN_REPLICA_ACKS 0 vs 1)")
    with sentinel_cluster(stack.workdir / "ha") as cluster:
        env = cluster.env()
        producers = {
            acks: Producer(
                load_settings(
                    profile="sandbox",
                    redis_url=env["REDIS_URL"],
                    redis_sentinels=env["REDIS_SENTINELS"],
                    redis_sentinel_master=env["REDIS_SENTINEL_MASTER"],
                    mce_base_url=stack.sandbox_url,
                    min_replica_acks=acks,
                    replica_ack_timeout_ms=2000,
                )
            )
            for acks in (0, 1)
        }
        for acks, producer in producers.items():  # connections and Sentinel look-up off the clock
            _timed_submits(producer, refs(f"dur-warm{acks}-", 20))
        samples: dict[int, list[float]] = {0: [], 1: []}
        for n in range(ROUNDS):
            for acks, producer in producers.items():
                samples[acks] += _timed_submits(producer, refs(f"dur{acks}-r{n}-", per_round))
        replica_lag = cluster.role(next(p for p in cluster.nodes if p != cluster.primary_port()))

    def ms(values: list[float], q: float) -> float | None:
        found = percentile(values, q)
        return None if found is None else round(found * 1000, 3)

    p50 = {acks: ms(v, 50) for acks, v in samples.items()}
    p99 = {acks: ms(v, 99) for acks, v in samples.items()}
    extra50 = None if p50[0] is None or p50[1] is None else round(p50[1] - p50[0], 3)
    extra99 = None if p99[0] is None or p99[1] is None else round(p99[1] - p99[0], 3)
    result.figures = [
        Figure("submit p50, MIN_REPLICA_ACKS=0", p50[0], "ms"),
        Figure("submit p99, MIN_REPLICA_ACKS=0", p99[0], "ms"),
        Figure("submit p50, MIN_REPLICA_ACKS=1", p50[1], "ms"),
        Figure("submit p99, MIN_REPLICA_ACKS=1", p99[1], "ms"),
        Figure("extra latency of WAIT, p50", extra50, "ms", note="p50(acks=1) - p50(acks=0)"),
        Figure("extra latency of WAIT, p99", extra99, "ms", note="p99(acks=1) - p99(acks=0)"),
    ]
    result.method = [
        "devstack.sentinel: primary + replica (redis-server, AOF appendfsync always) + 3 "
        "Sentinels on 127.0.0.1; the producer finds the primary through Sentinel.",
        f"{ROUNDS} rounds x {per_round} one-intent Producer.submit calls per setting, "
        "alternating 0 and 1 acks; 20 warm-up submits per setting off the clock.",
        "Each sample is the wall time of one submit call (ledger write + enqueue [+ WAIT]).",
    ]
    result.details = {
        "samples_per_setting": {acks: len(v) for acks, v in samples.items()},
        "replica_role_at_end": replica_lag,
        "mean_ms": {acks: round(sum(v) / len(v) * 1000, 3) for acks, v in samples.items()},
    }
    return result
