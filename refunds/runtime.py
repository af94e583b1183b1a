"""The process-wide pipeline objects: one Redis pool, one token cache, one HTTP session.

Built lazily on first use in each process (after a prefork worker forks), from the one Settings.
"""

from __future__ import annotations

import os
import threading

from config.settings import Settings, get_settings
from refunds.ledger import Ledger
from refunds.mce.auth import TokenCache
from refunds.mce.client import MceClient
from refunds.ratelimit import Pacer
from refunds.stats import Stats
from refunds.steps import Pipeline

_lock = threading.Lock()
_current: tuple[int, Pipeline] | None = None


def build_pipeline(settings: Settings) -> Pipeline:
    ledger = Ledger.from_url(settings.redis_url)
    stats = Stats(ledger.redis)
    client = MceClient(
        settings,
        pacer=Pacer(ledger.redis, settings.mce_max_rps, settings.pacing_max_wait),
        stats=stats,
    )
    client.tokens = TokenCache(ledger.redis, settings, client.fetch_token)
    return Pipeline(settings=settings, ledger=ledger, client=client, stats=stats)


def pipeline() -> Pipeline:
    """This process's Pipeline, rebuilt in a forked child (the parent's sockets are not its own)."""
    global _current  # noqa: PLW0603 - one per process by design
    with _lock:
        if _current is None or _current[0] != os.getpid():
            _current = (os.getpid(), build_pipeline(get_settings()))
        return _current[1]
