"""``python -m refunds.ops.health [--tick-within S]``: a health probe for container orchestrators.

Exit 0 when Redis answers (and, with ``--tick-within``, when a scheduler tick ran within that many
seconds, which proves beat is alive and a worker serves the timers queue); exit 1 with one line on
stderr otherwise. Compose uses it for the beat service, which has no port to probe.
"""

from __future__ import annotations

import argparse
import sys

import redis

from config.settings import load_settings
from refunds.errors import ConfigError
from refunds.store.connection import redis_client
from refunds.store.ledger import Ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refunds.ops.health")
    parser.add_argument(
        "--tick-within",
        type=float,
        default=None,
        help="also require a scheduler tick within this many seconds",
    )
    args = parser.parse_args(argv)
    try:
        ledger = Ledger(redis_client(load_settings()))
        ledger.ping()
        if args.tick_within is not None:
            since = ledger.since_last_tick()
            if since is None or since > args.tick_within:
                age = "never" if since is None else f"{since:.0f}s ago"
                sys.stderr.write(f"unhealthy: last scheduler tick {age}\n")
                return 1
    except (ConfigError, redis.RedisError) as exc:
        sys.stderr.write(f"unhealthy: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
