"""Payment webhooks with a KYT result: what MCE sends when its KYT engine flags a payment.

MCE does not document their shape (contract section 7), so the sandbox sends the shape the
pipeline's settings assume by default (``default``), and others a deployment may meet, to test
the detector's settings against:

- ``default``: ``eventType`` ``crypto.{family}.updated.v2``; ``data`` with ``transactionId``,
  ``status``, ``statusInfo`` ``PENDING_REFUND``, ``amount`` (a JSON number, as other MCE webhooks
  carry it), ``currency``, ``blockchain``, ``participantCode`` and ``kytInfo {kytType,
  kytResult, kytDetails}`` (the v2 withdrawal webhook's KYT object);
- ``flat``: ``kytResult``/``kytType`` directly in ``data``, ``statusInfo`` ``To Be Refunded``
  (MetaComp's deposit records' wording), the id as ``txnId``;
- ``no-kyt``: the default shape without ``kytInfo`` (a flagged payment whose marker is missing).

``kytResult`` may be any JSON value (an unknown ``9``, a string), so the pipeline's alert for an
unmapped result can be exercised. Bodies are built here; sending is the ``WebhookSender``'s.
"""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.responses import RawNumber, dumps
from sandbox.state import PARTICIPANT_CODE, Payment

SHAPES = ("default", "flat", "no-kyt")
FAMILY = {1: "deposit", 2: "collection", 3: "checkout"}
#: A payment's status in these webhooks (assumed, like everything here): 7, "PENDING_REFUND".
PENDING_STATUS = 7
KYT_DETAILS = {3: "High risk - further review required"}


def payment_body(
    payment: Payment,
    *,
    kyt_result: Any = 3,
    kyt_type: Any = 1,
    shape: str = "default",
    notification_id: str | None = None,
    participant_code: str = PARTICIPANT_CODE,
    code_msg: bool = False,
) -> tuple[str, bytes]:
    """(notificationId, body) of one payment webhook in ``shape``."""
    if shape not in SHAPES:
        raise ValueError(f"shape: must be one of {', '.join(SHAPES)}")
    nid = notification_id or str(uuid.uuid4())
    data: dict[str, Any] = {
        "transactionId": payment.transaction_id,
        "status": PENDING_STATUS,
        "statusInfo": "PENDING_REFUND",
        "amount": RawNumber(payment.amount),
        "currency": payment.currency,
        "blockchain": payment.blockchain,
        "participantCode": participant_code,
        "fromAddress": payment.source_address,
    }
    kyt = {
        "kytType": kyt_type,
        "kytResult": kyt_result,
        "kytDetails": KYT_DETAILS.get(kyt_result, "") if isinstance(kyt_result, int) else "",
    }
    if shape == "default":
        data["kytInfo"] = kyt
    elif shape == "flat":
        data["txnId"] = data.pop("transactionId")
        data["statusInfo"] = "To Be Refunded"
        data["kytResult"], data["kytType"] = kyt_result, kyt_type
    payload: dict[str, Any] = {
        "eventType": f"crypto.{FAMILY[payment.transaction_type]}.updated.v2",
        "notificationId": nid,
        "data": data,
    }
    if code_msg:
        payload = {"code": 200, "msg": "success", **payload}
    return nid, dumps(payload)
