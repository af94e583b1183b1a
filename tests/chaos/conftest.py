"""Fixtures of the chaos tests: a printed, replayable seed and a directory that outlives a run.

The chaos tests do not use the session ``stack``: they SIGKILL Redis, so each run builds its own
Redis, sandbox, workers and beat (see ``harness.ChaosStack``).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest


@pytest.fixture
def chaos_seed() -> int:
    """``CHAOS_SEED`` replays a run's schedule of kills; otherwise a fresh seed, printed."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 2**31))
    print(f"\nchaos seed {seed} (replay with CHAOS_SEED={seed})")
    return seed


@pytest.fixture
def chaos_dir(tmp_path: Path, chaos_seed: int, request: pytest.FixtureRequest) -> Path:
    """Logs, the Redis AOF, the event timeline and the summary of one run.

    Under pytest's temporary directory (which keeps only the last few sessions), or under
    ``CHAOS_DIR`` when set, so that a run's evidence outlives later test sessions.
    """
    keep = os.environ.get("CHAOS_DIR")
    if not keep:
        return tmp_path
    path = Path(keep) / f"{time.strftime('%Y%m%d-%H%M%S')}-{request.node.name[:40]}-{chaos_seed}"
    path.mkdir(parents=True)
    return path
