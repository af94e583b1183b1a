"""The worker's liveness beat: a thread in the worker's main process that says, about once a
second, "alive, holding these step messages" (``refunds.store.workers``).

Why the main process: it is the one that reserves messages from the broker (Celery's consumer),
and the one whose death loses the messages it reserved. Its view of what it holds is Celery's own:
``celery.worker.state.reserved_requests`` (received, not started) and ``active_requests``
(started). A message just received is written at once (the ``task_received`` handler wakes the
thread), not at the next beat, so a worker killed right after receiving a message has normally
already named it. A Redis that cannot be reached costs a WARNING once per outage, never the
worker: the beat resumes when Redis answers (and the tick then sees the worker alive again).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

import redis

from refunds.store.workers import BEAT_SECONDS, WorkerRegistry

log = logging.getLogger("refunds.liveness")

STEP_TASKS = frozenset({"refunds.create", "refunds.confirm", "refunds.poll"})


def fenced(request: Any) -> tuple[str, int] | None:
    """``(ref, fence)`` of a step request that carries a dispatch id, else None (a nudge without
    one is covered by its timer; other tasks hold no refund)."""
    if getattr(request, "name", None) not in STEP_TASKS:
        return None
    args = getattr(request, "args", None)
    if not isinstance(args, list | tuple) or len(args) != 2:
        return None
    ref, fence = args
    if not isinstance(ref, str) or not isinstance(fence, int) or isinstance(fence, bool):
        return None
    return ref, fence


def held_now(requests: Iterable[Any]) -> dict[str, int]:
    """The fenced step messages among ``requests`` (ref -> the newest fence held for it)."""
    held: dict[str, int] = {}
    for request in requests:
        found = fenced(request)
        if found is not None:
            ref, fence = found
            held[ref] = max(fence, held.get(ref, 0))
    return held


def _celery_requests() -> list[Any]:
    """Celery's reserved and active requests of this process (copied: the consumer changes them
    while we read; a change mid-copy is retried)."""
    from celery.worker import state  # noqa: PLC0415 - only in a worker process

    for _ in range(5):
        try:
            return [*list(state.reserved_requests), *list(state.active_requests)]
        except RuntimeError:  # "changed size during iteration"
            continue
    return []


class Liveness:
    """The beat thread of one worker process (``start`` once the consumer is ready)."""

    def __init__(self, registry: WorkerRegistry, hostname: str) -> None:
        self.registry = registry
        # The pid makes each incarnation its own entry: a worker restarted under the same
        # hostname must not overwrite what the dead one held before the tick saw it.
        self.name = f"{hostname}:{os.getpid()}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._received: dict[str, int] = {}
        self._failing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="worker-liveness", daemon=True)
        self._thread.start()

    def received(self, request: Any) -> None:
        """The consumer received ``request``: name it at once (the thread writes it)."""
        found = fenced(request)
        if found is None:
            return
        with self._guard:
            self._received[found[0]] = found[1]
        self._wake.set()

    def stop(self) -> None:
        """A clean shutdown: the thread stops beating and leaves the registry (waited for a
        moment only: a Redis that does not answer must not hold the shutdown; the tick then
        sweeps the entry, and the messages this worker gives back are requeued anyway)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * BEAT_SECONDS)

    def beat_once(self) -> None:
        """One beat: what Celery holds now, plus what was received since the last beat (a
        request is named by ``task_received`` before Celery lists it as reserved)."""
        with self._guard:
            received, self._received = self._received, {}
        held = held_now(_celery_requests())
        for ref, fence in received.items():
            held[ref] = max(fence, held.get(ref, 0))
        self.registry.beat(self.name, held)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(BEAT_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.beat_once()
            except Exception as exc:  # noqa: BLE001 - never let the beat thread die
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "worker liveness beat failed (%s); retrying every %g s",
                        type(exc).__name__,
                        BEAT_SECONDS,
                    )
                continue
            if self._failing:
                self._failing = False
                log.warning("worker liveness beat written again")
        try:
            self.registry.leave(self.name)
        except redis.RedisError:
            log.info("could not leave the worker registry; the tick will sweep this entry")
