"""How an answer travels on the wire: whole, trickled, padded to a size, or never ending.

A provider (or a proxy in front of it) can send an answer slowly, send far too much, or never
finish it. The client must bound each by a total deadline and an answer cap; these switches make
each happen on demand. Nothing here builds a large body in memory: padding and the endless
filler are written in fixed-size chunks, so a 100 MiB answer costs the simulator one chunk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from sandbox.config import SandboxConfig

#: Bytes of filler written per chunk (padding and the endless body).
FILL_CHUNK = 64 * 1024
_PAD_OPEN = b',"padding":"'
_PAD_CLOSE = b'"}'


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class Shaping:
    """One answer's travel: ``trickle_bytes`` per ``trickle_seconds`` (0: at once), padded to
    ``size_bytes`` (0: as is), or ``endless`` (no Content-Length, filler until the client goes)."""

    trickle_bytes: int = 0
    trickle_seconds: float = 0.0
    size_bytes: int = 0
    endless: bool = False

    @classmethod
    def from_config(cls, config: SandboxConfig) -> Shaping | None:
        shaping = cls(
            trickle_bytes=config.trickle_bytes,
            trickle_seconds=config.trickle_interval_ms / 1000,
            size_bytes=config.answer_size_bytes,
            endless=config.endless_answer,
        )
        return None if shaping == cls(trickle_seconds=shaping.trickle_seconds) else shaping

    def content_length(self, body: bytes) -> int | None:
        """The Content-Length to announce: none for an endless answer."""
        if self.endless:
            return None
        return max(len(body), self.size_bytes) if self._pads(body) else len(body)

    def _pads(self, body: bytes) -> bool:
        # Padding goes inside the JSON object, so the answer stays valid JSON of the wanted size.
        room = len(body) + len(_PAD_OPEN) + len(_PAD_CLOSE) - 1
        return self.size_bytes > room and body.endswith(b"}")

    def pieces(self, head: bytes, body: bytes) -> Iterator[bytes]:
        """The bytes to write, in order (the writer trickles them if asked)."""
        yield head
        if self.endless:
            yield body[:-1] + _PAD_OPEN if body.endswith(b"}") else body
            filler = b"x" * FILL_CHUNK
            while True:
                yield filler
        if not self._pads(body):
            yield body
            return
        yield body[:-1] + _PAD_OPEN
        left = self.size_bytes - (len(body) - 1 + len(_PAD_OPEN) + len(_PAD_CLOSE))
        filler = b"x" * FILL_CHUNK
        while left > 0:
            yield filler[:left]
            left -= FILL_CHUNK
        yield _PAD_CLOSE

    def write(self, out: Writer, head: bytes, body: bytes) -> None:
        """Write the answer; an OSError (the client hung up) ends it, as it ends any answer."""
        for piece in self.pieces(head, body):
            if not self.trickle_bytes:
                out.write(piece)
                continue
            for start in range(0, len(piece), self.trickle_bytes):
                out.write(piece[start : start + self.trickle_bytes])
                out.flush()
                time.sleep(self.trickle_seconds)
