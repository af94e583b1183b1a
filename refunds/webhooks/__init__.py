"""MCE's Crypto Refund Webhook (contract section 6), in three rooms:

- ``verify``: the signature over the raw body;
- ``receive``: the delivery end to end: verify, store raw, de-duplicate, route, apply;
- ``parking``: apply now or park until the refund can take it; replay after every step and
  operator action;

with ``event`` (parsing and outcomes) and ``apply`` (one event applied through the same decision
as every provider answer) beneath them.
"""

from refunds.webhooks.apply import reference_of
from refunds.webhooks.event import (
    ACTOR,
    EVENT_TYPES,
    WebhookResult,
    is_refund_event,
    parse,
)
from refunds.webhooks.parking import apply_event, replay_parked, replay_with
from refunds.webhooks.receive import receive, receive_delivery
from refunds.webhooks.verify import (
    SIGNATURE_HEADER,
    SIGNATURE_SCHEME,
    parse_signature_header,
    signature,
    verify,
)

__all__ = [
    "ACTOR",
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "SIGNATURE_SCHEME",
    "WebhookResult",
    "apply_event",
    "is_refund_event",
    "parse",
    "parse_signature_header",
    "receive",
    "receive_delivery",
    "reference_of",
    "replay_parked",
    "replay_with",
    "signature",
    "verify",
]
