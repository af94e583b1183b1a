"""What MCE says before an operator cancels a refund: the ledger can be behind MCE.

A failover can lose the write that began Confirm (or the one that recorded Create's id, and the
Confirm begun with it): the ledger then says ``created`` or ``received`` while MCE confirmed the
refund. ``refunds.actions.cancel`` therefore reads the refund at MCE before it writes, and
refuses when MCE says it is confirmed, or cannot be asked (fails closed).
"""

from __future__ import annotations

from typing import Protocol

from refunds.errors import MceError, McePermanentError
from refunds.mce.contract import STATUS_CREATED, STATUS_NAMES, Code
from refunds.mce.schemas import RefundData
from refunds.models import RefundRecord


class RefundReader(Protocol):
    """What cancel needs of the MCE client: a Get by refund id or by clientReference."""

    def get(
        self, *, crypto_refund_id: str | None = None, client_reference: str | None = None
    ) -> RefundData: ...


def confirmed_at_mce(record: RefundRecord, provider: RefundReader) -> str | None:
    """Why MCE forbids cancelling ``record`` (None: MCE has it unconfirmed, or not at all).

    Asked because the ledger can be behind MCE: a failover can lose the write that began Confirm
    (or the one that recorded Create's id, and Confirm with it). By refund id when the ledger has
    it, else by clientReference. Fails closed: a Get that fails refuses the cancel.
    """
    try:
        if record.crypto_refund_id:
            seen = provider.get(crypto_refund_id=record.crypto_refund_id)
        else:
            seen = provider.get(client_reference=record.client_reference)
    except McePermanentError as exc:
        if exc.code == Code.NOT_FOUND and not record.crypto_refund_id:
            return None  # never created at MCE
        return f"could not ask MCE whether it is confirmed ({exc}); look again"
    except MceError as exc:
        return f"could not ask MCE whether it is confirmed ({exc}); try again"
    status = seen.status
    if status == STATUS_CREATED:
        return None
    if not isinstance(status, int):
        return f"MCE answers status {status!r}, not created (1); look again"
    name = STATUS_NAMES.get(status, "unknown")
    return (
        f"MCE says it is confirmed (status {status}: {name}); it is the provider's refund to "
        "finish, not cancelled (refunds retry follows it)"
    )
