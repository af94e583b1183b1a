"""Verifying MCE's webhook signature over the raw body (contract section 6).

``X-Signature: t=<epoch ms>,v0=<hex>``: HMAC-SHA256 of ``"{t}.{body}"``, compared in constant
time, any of several ``v0`` accepted (secret rotation), with a symmetric tolerance in
milliseconds. A forged or stale delivery is refused before anything is stored or applied.
"""

from __future__ import annotations

import hmac
import time

from refunds.errors import WebhookRejectedError
from refunds.signing import sign

SIGNATURE_HEADER = "X-Signature"  # fact: "t=<epoch ms>,v0=<64 hex>" on three MCE webhook pages
SIGNATURE_SCHEME = "v0"  # assumed (Stripe/Bridge convention): hex HMAC-SHA256 of "{t}.{raw body}"
#: ``t`` is epoch milliseconds in ASCII digits; 16 digits reach the year 318857, so more is junk.
_MAX_TIMESTAMP_DIGITS = 16


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``"{timestamp}.{raw body}"``, t exactly as in the header
    (the shared signer, ``refunds.signing.sign``)."""
    return sign(secret, timestamp, body)


def parse_signature_header(header: str) -> tuple[str | None, list[str]]:
    """(t, [v0 values]) from ``t=<ms>,v0=<hex>[,v0=<hex>...][,v1=...]``.

    Comma-separated ``key=value`` pairs, spaces around them ignored; several ``v0`` are kept (secret
    rotation), other schemes are ignored (a future ``v1``). Two different ``t`` values are malformed
    (400): which one was signed would be ambiguous.
    """
    timestamps: set[str] = set()
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            timestamps.add(value)
        elif key == SIGNATURE_SCHEME and value:
            candidates.append(value)
    if len(timestamps) > 1:
        raise WebhookRejectedError(400, "signature header has more than one timestamp")
    return (timestamps.pop() if timestamps else None), candidates


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance: float,
    at: float | None = None,
) -> None:
    """Check MCE's ``X-Signature`` over the raw body (contract section 6).

    ``tolerance`` is in seconds, applied symmetrically and computed in milliseconds; ``at`` is the
    current time in epoch seconds (tests pin it). Raises WebhookRejectedError: 401 when the
    header, its ``v0`` or a matching signature is missing; 400 when ``t`` is absent or not plain
    ASCII digits (``NaN``, ``1_796_030_000``, ``+1796030000``, ``1.79603e9``, Arabic-Indic
    digits: Python's ``int()`` accepts several of these, so it is never asked) or outside the
    tolerance.
    """
    if not header or not header.strip():
        raise WebhookRejectedError(401, f"missing {SIGNATURE_HEADER} header")
    timestamp, candidates = parse_signature_header(header)
    if timestamp is None:
        raise WebhookRejectedError(400, "signature header has no timestamp t")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookRejectedError(400, "timestamp t is not epoch milliseconds in ASCII digits")
    if not candidates:
        raise WebhookRejectedError(401, f"signature header has no {SIGNATURE_SCHEME} signature")
    expected = signature(secret, timestamp, body).encode()
    matched = False
    for candidate in candidates:  # every candidate compared, in constant time each
        matched |= hmac.compare_digest(expected, candidate.lower().encode("ascii", "replace"))
    if not matched:
        raise WebhookRejectedError(401, "signature does not match")
    now_ms = time.time_ns() // 1_000_000 if at is None else int(at * 1000)
    if abs(now_ms - int(timestamp)) > int(tolerance * 1000):
        raise WebhookRejectedError(400, "timestamp outside the tolerance (replayed or clock skew)")
