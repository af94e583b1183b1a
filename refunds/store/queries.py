"""Listings and counts over the records: by state, by creation time, conflicts, the refund-id index.

Read-only, and never one record at a time (that is ``refunds.store.records``): the state sets
(``rp:state:{state}``), the creation index (``rp:all``), the conflicts set and the
cryptoRefundId index, all kept by the records' writes in the same script (``store.keys`` lists
them). Large sets are walked a chunk at a time, so memory stays bounded at 100,000 refunds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import redis

from refunds.models import State
from refunds.store.keys import ALL, CONFLICTS, refund_id_key, state_key

__all__ = ["Queries"]


class Queries:
    """References by state and age, counts, and the cryptoRefundId index."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def references(self, state: State | None = None, limit: int | None = None) -> list[str]:
        """References, oldest first; filtered by state when given."""
        if state is None:
            end = -1 if limit is None else limit - 1
            return cast(list[str], self.redis.zrange(ALL, 0, end))
        members = cast(set[str], self.redis.smembers(state_key(state)))
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for ref in members:
            pipe.zscore(ALL, ref)
        scores = pipe.execute()
        ordered = [r for _, r in sorted(zip(scores, members, strict=True), key=lambda p: p[0] or 0)]
        return ordered if limit is None else ordered[:limit]

    def reference_of_refund_id(self, crypto_refund_id: str) -> str | None:
        """The clientReference whose record first recorded ``crypto_refund_id`` (None: no record
        has it). Written by the transition that set the id, in the same script."""
        found = self.redis.get(refund_id_key(crypto_refund_id))
        return None if found is None else str(found)

    def conflicted(self) -> list[str]:
        """References whose provider news contradicted a final state, oldest first."""
        members = cast(set[str], self.redis.smembers(CONFLICTS))
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for ref in members:
            pipe.zscore(ALL, ref)
        scores = pipe.execute()
        return [r for _, r in sorted(zip(scores, members, strict=True), key=lambda p: p[0] or 0)]

    def conflict_count(self) -> int:
        return int(self.redis.scard(CONFLICTS))

    def counts(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for state in State:
            pipe.scard(state_key(state))
        return {str(s): int(n) for s, n in zip(State, pipe.execute(), strict=True)}

    def record_count(self) -> int:
        """Refunds in the ledger (``rp:all``'s size)."""
        return int(self.redis.zcard(ALL))

    def oldest_in_state(self, state: State | str, chunk: int = 1000) -> tuple[str, float] | None:
        """``(reference, created_at)`` of the oldest refund in ``state``, or None when it has none.

        SSCANs the state's set and ZSCOREs each member in the creation index (pipelined, a chunk
        at a time, so memory stays bounded); a member missing from the index is skipped, never
        guessed. Ties go to the smaller reference.
        """
        best: tuple[float, str] | None = None
        cursor = 0
        while True:
            cursor, members = cast(
                tuple[int, list[str]], self.redis.sscan(state_key(state), cursor, count=chunk)
            )
            if members:
                pipe = self.redis.pipeline(transaction=False)
                for ref in members:
                    pipe.zscore(ALL, ref)
                for ref, score in zip(members, pipe.execute(), strict=True):
                    if score is not None and (best is None or (float(score), ref) < best):
                        best = (float(score), str(ref))
            if int(cursor) == 0:
                break
        return None if best is None else (best[1], best[0])

    def iter_references(self, chunk: int = 1000) -> Iterator[str]:
        """Every reference, oldest first, a chunk at a time."""
        start = 0
        while True:
            part = cast(list[str], self.redis.zrange(ALL, start, start + chunk - 1))
            yield from part
            if len(part) < chunk:
                return
            start += chunk
