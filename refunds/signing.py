"""The one HMAC signer: HMAC-SHA256 over ``"{timestamp}.{body}"``, hex-encoded.

MCE signs its webhooks this way (contract section 6), and our outcome callbacks to merchant apps
are signed the same way so a merchant verifies both with one function.
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``f"{timestamp}.".encode() + body`` under ``secret``."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
