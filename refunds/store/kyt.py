"""The KYT intake's Redis part: the replay list of payment webhooks, the decision kept on each
stored event, a rule-made refund's notificationIds, and the KYT counters.

Keys (``refunds.store.keys``): ``rp:kyt:events`` (payment webhook ids by time received, kept as
long as the events themselves), the ``kyt`` field of ``rp:wh:{notificationId}`` (the decision as
JSON), ``rp:stats:kyt:matches`` and ``rp:stats:kyt:alerts``.
"""

from __future__ import annotations

import json
from typing import Any, cast

import redis

from refunds.store.codec import FIELDS
from refunds.store.events import EVENT_TTL
from refunds.store.keys import KYT_ALERTS, KYT_EVENTS, KYT_MATCHES, event_key, record_key


class KytStore:
    def __init__(self, client: redis.Redis, ttl: int = EVENT_TTL) -> None:
        self.redis = client
        self.ttl = ttl

    def remember(self, nid: str, at: float) -> None:
        """List a stored payment webhook for the backtest (first time seen wins); entries older
        than the events' lifetime are dropped with it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(KYT_EVENTS, {nid: at}, nx=True)
        pipe.zremrangebyscore(KYT_EVENTS, "-inf", at - self.ttl)
        pipe.execute()

    def since(self, start: float, end: float = float("inf")) -> list[tuple[str, float]]:
        """Payment webhook ids received in [start, end), oldest first, with their time."""
        rows = self.redis.zrangebyscore(KYT_EVENTS, start, f"({end}", withscores=True)
        return [(str(nid), float(at)) for nid, at in cast(list[tuple[str, float]], rows)]

    def body(self, nid: str) -> str | None:
        return cast(str | None, self.redis.hget(event_key(nid), "body"))

    def keep_decision(self, nid: str, decision: dict[str, Any]) -> None:
        self.redis.hset(event_key(nid), "kyt", json.dumps(decision, sort_keys=True))

    def decision(self, nid: str) -> dict[str, Any] | None:
        raw = cast(str | None, self.redis.hget(event_key(nid), "kyt"))
        return cast(dict[str, Any], json.loads(raw)) if raw else None

    def add_notification(self, ref: str, nid: str) -> bool:
        """Add ``nid`` to the rule-made record's notificationIds (atomic read-modify-write;
        answers False when the record is gone or already lists it)."""
        key, name = record_key(ref), FIELDS["notification_ids"]
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    if not pipe.exists(key):
                        return False
                    raw = cast(str | None, pipe.hget(key, name))
                    ids: list[str] = json.loads(raw) if raw else []
                    if nid in ids:
                        return False
                    pipe.multi()
                    pipe.hset(key, name, json.dumps([*ids, nid], separators=(",", ":")))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def count_match(self, rule: str, action: str, mode: str) -> None:
        self.redis.hincrby(KYT_MATCHES, f"{rule}|{action}|{mode}", 1)

    def count_alert(self, kind: str) -> None:
        self.redis.hincrby(KYT_ALERTS, kind, 1)

    def matches(self) -> dict[tuple[str, str, str], int]:
        out = {}
        for field, n in cast(dict[str, str], self.redis.hgetall(KYT_MATCHES)).items():
            rule, action, mode = [*str(field).split("|"), "", ""][:3]
            out[(rule, action, mode)] = int(n)
        return out

    def alerts(self) -> dict[str, int]:
        raw = cast(dict[str, str], self.redis.hgetall(KYT_ALERTS))
        return {str(k): int(v) for k, v in raw.items()}
