"""``python -m refunds.ops.health [--tick-within S] [--alerts]``: a health probe for orchestrators.

Exit 0 when Redis answers, takes a write (not out of memory, not a replica) and still holds the
ledger (no reset recorded: ``refunds.store.epoch``), and, with ``--tick-within``, when a
scheduler tick ran within that many seconds, which proves beat is alive and a worker serves the
timers queue; exit 1 with one line on stderr otherwise. Compose uses it for the beat service,
which has no port to probe.

Red as well while MCE's token endpoint refuses our credentials (a cluster-wide incident: provider
calls are paused; see ``refunds.mce.auth``), and while MCE's news contradicts a final state we
told the merchant and no operator has acknowledged it (``refunds.conflicts``). The age alert (a
refund in flight older than ``REFUNDS_AGE_ALERT_AFTER``) is printed as a warning, and turns the
probe red with ``--alerts`` (for a monitoring probe; a liveness probe should not restart a
healthy process for it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import redis

from config.settings import Settings, load_settings
from refunds.errors import ConfigError
from refunds.models import iso
from refunds.ops.snapshot import ARCHIVE_LAG_WARN, oldest_in_flight_age
from refunds.store.archive_queue import ArchiveQueue
from refunds.store.connection import redis_client
from refunds.store.epoch import watch, write_probe
from refunds.store.ledger import Ledger
from refunds.store.pacing import credentials_refused_since


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refunds.ops.health")
    parser.add_argument(
        "--tick-within",
        type=float,
        default=None,
        help="also require a scheduler tick within this many seconds",
    )
    parser.add_argument(
        "--alerts",
        action="store_true",
        help="also fail on the age alert (a refund in flight older than REFUNDS_AGE_ALERT_AFTER)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        ledger = Ledger(redis_client(settings))
        ledger.ping()
        for line, red in _findings(settings, ledger, args):
            sys.stderr.write(line + "\n")
            if red:
                return 1
    except (ConfigError, redis.RedisError) as exc:
        sys.stderr.write(f"unhealthy: {exc}\n")
        return 1
    return 0


def _findings(
    settings: Settings, ledger: Ledger, args: argparse.Namespace
) -> Iterator[tuple[str, bool]]:
    """What the probe reports, in order: ``(line, red)``; the probe stops at the first red one.
    Checks run lazily, so a red finding spares the later reads."""
    # --- Redis lost the ledger, or refuses writes (refunds.store.epoch) ----------------------
    reset = watch(ledger.redis, "health").check()
    if reset is not None:
        yield f"unhealthy: {reset.describe()}", True
    write_probe(ledger.redis)  # OutOfMemoryError / ReadOnlyError: red (raised)
    # --- end --------------------------------------------------------------------------------
    refused = credentials_refused_since(ledger.redis)
    if refused is not None:
        yield (
            f"unhealthy: MCE refuses our credentials since {iso(refused)}; provider calls "
            "are paused (check MCE_CLIENT_ID / MCE_CLIENT_SECRET)",
            True,
        )
    conflicts = ledger.conflict_count()
    if conflicts:
        yield (
            f"unhealthy: {conflicts} refund(s) where MCE contradicts the final state the "
            "merchant was told (refunds conflicts list; refunds conflicts ack REF --reason)",
            True,
        )
    level = "unhealthy" if args.alerts else "warning"
    lag = ArchiveQueue(ledger.redis).lag()
    if lag.oldest_age > ARCHIVE_LAG_WARN:
        yield (
            f"{level}: archive lag: {lag.length} changes queued, the oldest "
            f"{lag.oldest_age:.0f}s (is the archive database reachable?)",
            args.alerts,
        )
    oldest = oldest_in_flight_age(ledger)
    if oldest > settings.age_alert_after:
        yield (
            f"{level}: age alert: a refund in flight is {oldest:.0f}s old "
            f"(REFUNDS_AGE_ALERT_AFTER={settings.age_alert_after:.0f}s)",
            args.alerts,
        )
    if args.tick_within is not None:
        since = ledger.since_last_tick()
        if since is None or since > args.tick_within:
            age = "never" if since is None else f"{since:.0f}s ago"
            yield f"unhealthy: last scheduler tick {age}", True


if __name__ == "__main__":
    raise SystemExit(main())
