"""The sandbox's own control API under ``/sandbox`` (no auth: a dev and test tool only).

Tests and the demo use it to flag payments as pending-refund (what MCE's KYT would do), switch
faults, revoke tokens, read counters that prove "exactly one effect", list and replay webhook
deliveries, and reset between runs. Every update is validated completely before anything changes.
"""

from __future__ import annotations

from typing import Any

from sandbox import problems
from sandbox.config import SandboxConfig
from sandbox.faults import FaultInjector
from sandbox.payment_webhooks import SHAPES, payment_body
from sandbox.problems import ProviderError, invalid
from sandbox.responses import Request, Response, json_response
from sandbox.state import OUTCOME_STATUS, Payment, SandboxState
from sandbox.validation import (
    optional_str,
    parse_json_object,
    parse_optional_json_object,
    require_amount,
    require_str,
    require_transaction_type,
)
from sandbox.webhooks import WebhookSender

PREFIX = "/sandbox"


class AdminApi:
    def __init__(self, state: SandboxState, faults: FaultInjector, webhooks: WebhookSender) -> None:
        self.state = state
        self.faults = faults
        self.webhooks = webhooks

    def healthz(self, _request: Request) -> Response:
        return json_response({"ok": True})

    def flag_payments(self, request: Request) -> Response:
        """Flag payments pending-refund; an item with a ``webhook`` object also sends its
        payment webhook with the KYT result (``sandbox.payment_webhooks``)."""
        body = parse_json_object(request.body)
        items = body.get("payments")
        if not isinstance(items, list):
            raise invalid("payments: required, must be a list")
        payments = [_payment(item, f"payments[{i}]") for i, item in enumerate(items)]
        sends = [_webhook_options(item, f"payments[{i}]") for i, item in enumerate(items)]
        flagged = self.state.flag_payments(payments)
        sent = self._send([(p, o) for p, o in zip(payments, sends, strict=True) if o is not None])
        # "webhooks" only when some were sent: the answer to a plain flag stays {"flagged": n}.
        return json_response({"flagged": flagged, **({"webhooks": sent} if sent else {})})

    def send_payment_webhooks(self, request: Request) -> Response:
        """Send payment webhooks for payments described in full, flagged or not (a payment the
        sandbox does not hold pending answers Create with CRYPTO_REFUND_NOT_PENDING)."""
        body = parse_json_object(request.body)
        items = body.get("payments")
        if not isinstance(items, list):
            raise invalid("payments: required, must be a list")
        pairs = [
            (_payment(item, f"payments[{i}]"), _webhook_options(item, f"payments[{i}]") or {})
            for i, item in enumerate(items)
        ]
        return json_response({"webhooks": self._send(pairs)})

    def _send(self, pairs: list[tuple[Payment, dict[str, Any]]]) -> list[str]:
        if pairs and self.state.config.webhook_url is None:
            raise invalid("webhook_url: not set, there is nowhere to send a payment webhook")
        sent = []
        for payment, options in pairs:
            copies = options.pop("copies", 1)
            try:
                nid, body = payment_body(
                    payment, code_msg=self.state.config.webhook_code_msg, **options
                )
            except ValueError as exc:
                raise invalid(str(exc)) from None
            key = f"payment:{payment.transaction_type}:{payment.transaction_id}"
            self.webhooks.send_body(nid, key, body, copies)
            sent.append(nid)
        return sent

    def get_config(self, _request: Request) -> Response:
        return json_response(self.state.config.to_dict())

    def update_config(self, request: Request) -> Response:
        partial = parse_json_object(request.body)
        try:
            config = self.state.config.merge(partial)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        self.state.set_config(config)
        return json_response(config.to_dict())

    def revoke_tokens(self, _request: Request) -> Response:
        return json_response({"revoked": self.state.revoke_tokens()})

    def counters(self, request: Request) -> Response:
        counters = self.state.counters(prefix=request.query_value("prefix") or "")
        counters["webhooks"] = self.webhooks.counters()
        return json_response(counters)

    def recorded_requests(self, request: Request) -> Response:
        """The last requests per operation as received (body, query, content type), oldest first;
        ``?operation=create`` for one. Credentials are masked; bearer tokens are never kept."""
        return json_response({"requests": self.state.requests(request.query_value("operation"))})

    def webhook_deliveries(self, request: Request) -> Response:
        """Finished deliveries (delivered or given up), oldest first; the last 10,000 are kept."""
        prefix = request.query_value("prefix") or ""
        return json_response({"deliveries": self.webhooks.finished(prefix)})

    def replay_webhook(self, request: Request) -> Response:
        body = parse_json_object(request.body)
        notification_id = require_str(body, "notificationId")
        if self.state.config.webhook_url is None:
            raise invalid("webhook_url: not set, there is nowhere to send a replay")
        if not self.webhooks.replay(notification_id):
            raise ProviderError(
                404, problems.NOT_FOUND, f"notificationId {notification_id!r}: no such notification"
            )
        return json_response({"replayed": notification_id})

    def reset(self, request: Request) -> Response:
        partial = parse_optional_json_object(request.body)
        try:
            config = SandboxConfig().merge(partial or {})
        except ValueError as exc:
            raise invalid(str(exc)) from None
        # State first: once its refunds are gone no old status change can be queued any more.
        self.state.reset(config)
        self.webhooks.reset()
        self.faults.reset()
        return json_response({"reset": True, "config": config.to_dict()})


def _payment(item: Any, label: str) -> Payment:
    if not isinstance(item, dict):
        raise invalid(f"{label}: must be an object")
    outcome = optional_str(item, "outcome", "completed", f"{label}.outcome")
    if outcome not in OUTCOME_STATUS:
        raise invalid(f"{label}.outcome: must be one of {sorted(OUTCOME_STATUS)}")
    return Payment(
        transaction_type=require_transaction_type(item, f"{label}.originalTransactionType"),
        transaction_id=require_str(item, "originalTransactionId", f"{label}.originalTransactionId"),
        amount=require_amount(item, "amount", "10.00", f"{label}.amount"),
        currency=optional_str(item, "currency", "USDT", f"{label}.currency"),
        blockchain=optional_str(item, "blockchain", "TRON", f"{label}.blockchain"),
        outcome=outcome,
    )


def _webhook_options(item: Any, label: str) -> dict[str, Any] | None:
    """An item's ``webhook`` object as ``payment_body`` arguments (None: no webhook)."""
    if not isinstance(item, dict) or item.get("webhook") is None:
        return None
    hook = item["webhook"]
    if not isinstance(hook, dict):
        raise invalid(f"{label}.webhook: must be an object")
    known = {"kytResult", "kytType", "shape", "notificationId", "participantCode", "copies"}
    unknown = sorted(set(hook) - known)
    if unknown:
        raise invalid(f"{label}.webhook: unknown field {unknown[0]!r}")
    if hook.get("shape", "default") not in SHAPES:
        raise invalid(f"{label}.webhook.shape: must be one of {', '.join(SHAPES)}")
    copies = hook.get("copies", 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 10:
        raise invalid(f"{label}.webhook.copies: must be an integer from 1 to 10")
    options: dict[str, Any] = {"copies": copies}
    for name, arg in (
        ("kytResult", "kyt_result"),
        ("kytType", "kyt_type"),
        ("shape", "shape"),
        ("notificationId", "notification_id"),
        ("participantCode", "participant_code"),
    ):
        if name in hook:
            options[arg] = hook[name]
    return options
