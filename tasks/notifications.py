"""``notifications.deliver``: one outcome notification from the outbox, at least once.

The outbox entry is leased by the scheduler tick; this task delivers it and removes it, or puts it
back with a backoff. See ``refunds.notify`` for the channels and the signature.
"""

from __future__ import annotations

import os

from refunds.context import current_context
from refunds.notify import Notifier
from worker.app import app

_notifier: tuple[int, Notifier] | None = None


def notifier() -> Notifier:
    global _notifier  # noqa: PLW0603 - one per process (it holds an HTTP session)
    if _notifier is None or _notifier[0] != os.getpid():
        p = current_context()
        _notifier = (os.getpid(), Notifier(p.settings, p.ledger, app))
    return _notifier[1]


@app.task(name="notifications.deliver", acks_late=True, reject_on_worker_lost=True)
def deliver(member: str) -> str:
    """Deliver one outcome notification (``task:REF`` or ``http:REF``)."""
    return notifier().deliver(member).note
