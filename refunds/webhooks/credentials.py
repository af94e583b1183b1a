"""Webhooks per credential (``POST /webhooks/mce/{credential}``) in a PSP deployment.

Each MCE login signs its webhooks with its own secret, so each credential of the registry has its
own address, verified with that credential's secrets: two during a rotation, either accepted.
A verified delivery that names a ``participantCode`` the credential does not serve (or, without
one, a refund of such a participant) is refused as a mismatch: stored raw (status ``refused``),
counted (``participant_mismatch``), logged, answered 403 and never applied, because one login
must not move another login's merchants' refunds.
Everything else goes the way of ``/webhooks/mce`` (``refunds.webhooks.receive.accept``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from refunds.context import Context
from refunds.errors import WebhookRejectedError
from refunds.models import now
from refunds.participants.registry import registry_of
from refunds.webhooks.event import WebhookResult, parse
from refunds.webhooks.receive import accept
from refunds.webhooks.verify import SIGNATURE_HEADER, verify

log = logging.getLogger("refunds.webhooks")

MISMATCH = "participant_mismatch"  # the webhook outcome counted (refunds_webhooks{outcome=...})
_NO_MATCH = "signature does not match"


def verify_any(secrets: list[str], header: str | None, body: bytes, *, tolerance: float) -> None:
    """``verify`` with each secret in turn (a rotation's old and new); the first that matches
    wins. A malformed or stale header is refused whatever the secret."""
    refused: WebhookRejectedError | None = None
    for secret in secrets:
        try:
            verify(secret, header, body, tolerance=tolerance)
        except WebhookRejectedError as exc:
            if exc.reason != _NO_MATCH:
                raise
            refused = exc
        else:
            return
    raise refused or WebhookRejectedError(401, _NO_MATCH)


def named_participant(body: bytes, data: Mapping[str, Any]) -> str | None:
    """The ``participantCode`` a delivery names (in ``data``, else at the top), if any."""
    code = data.get("participantCode")
    if code is None:
        event = json.loads(body)  # parsed once already by ``parse``: valid JSON
        code = event.get("participantCode") if isinstance(event, dict) else None
    return None if code is None else str(code)


def receive_for_credential(
    p: Context, credential: str, body: bytes, headers: Mapping[str, str]
) -> WebhookResult:
    """Handle one delivery to credential ``credential``'s address. Raises WebhookRejectedError:
    404 for a credential the registry lacks, 400/401 as ``verify``, 403 for a mismatch."""
    registry = registry_of(p.settings)
    cred = registry.credentials.get(credential) if registry.from_file else None
    if cred is None:
        raise WebhookRejectedError(404, f"no credential {credential!r} in the registry")
    verify_any(
        [s.get_secret_value() for s in cred.webhook_secrets],
        headers.get(SIGNATURE_HEADER),
        body,
        tolerance=p.settings.webhook_tolerance_seconds,
    )
    nid, _kind, data = parse(body)
    ref = data.get("clientReference") if isinstance(data.get("clientReference"), str) else None
    code = named_participant(body, data)
    if code is None and ref is not None:
        # No code in the body: the refund it names says whose it is.
        record = p.ledger.find(ref)
        code = None if record is None else registry.owner(record.participant)
    if code is not None and code not in registry.codes_of(credential):
        if p.events.store(nid, body, now()) in ("new", "retry"):
            p.events.mark(nid, "refused", ref)  # kept raw, for a human; never applied
        p.stats.record_webhook(MISMATCH)
        log.warning(
            "webhook refused: participantCode %s does not belong to credential %s",
            code,
            credential,
            extra={"client_reference": ref, "notification_id": nid, "participant": code},
        )
        raise WebhookRejectedError(
            403, f"participantCode {code} does not belong to credential {credential}"
        )
    return accept(p, body)
