"""The cost of one ``/metrics`` scrape with N refunds in flight (issue 20: flat, whatever N).

``python -m bench.metrics_scrape --refunds 1000 100000``: for each N, a private redis-server (no
AOF) gets N intents through ``Ledger.submit_many`` in chunks of 1,000 (every one ``received``:
in flight, with its timer; the fastest way to a large population, and the state does not change
what a scrape reads), then ``refunds web`` starts on it and the script times ``GET /metrics``
over HTTP: three warm-up scrapes, then the median and the max of ``--scrapes`` (default 11).
Nothing else runs against that Redis. Only the ledger and process helpers the pipeline has had
since before the in-flight index are used, so the same script measures an older checkout (put it
first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import chunks, intents, refs
from devstack.localstack import wait_until
from devstack.processes import free_port, start_redis, start_web
from refunds.store.ledger import Ledger


def measure(n: int, scrapes: int, workdir: Path) -> dict[str, float]:
    redis_child, url = start_redis(workdir / f"redis-{n}", appendonly=False)
    web = None
    try:
        ledger = Ledger.from_url(url)
        for part in chunks(intents(refs("scrape-", n)), 1000):
            ledger.submit_many(list(part), due_in=3600)
        if ledger.counts()["received"] != n:
            raise SystemExit(f"expected {n} refunds received, found {ledger.counts()}")
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "REFUNDS_PROFILE": "sandbox",
            "REDIS_URL": url,
            "REFUNDS_LOG_LEVEL": "WARNING",
        }
        web = start_web(workdir, env, port=port, name=f"web-{n}")
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(base + "/healthz", timeout=2).ok, 60, "web", child=web)
        http = requests.Session()
        for _ in range(3):
            http.get(base + "/metrics", timeout=120).raise_for_status()
        times = []
        for _ in range(scrapes):
            start = time.perf_counter()
            http.get(base + "/metrics", timeout=120).raise_for_status()
            times.append(time.perf_counter() - start)
        return {
            "refunds_in_flight": n,
            "median_ms": round(statistics.median(times) * 1000, 2),
            "max_ms": round(max(times) * 1000, 2),
        }
    finally:
        if web is not None:
            web.stop()
        redis_child.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--scrapes", type=int, default=11)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scrape-bench-") as tmp:
        for n in args.refunds:
            sys.stdout.write(json.dumps(measure(n, args.scrapes, Path(tmp))) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
