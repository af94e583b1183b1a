"""Every assumption about MCE's API lives here, once (see ``shared/provider-contract.md``).

Facts come from MCE's public docs; items marked *assumed* are our reading where the docs are
silent. When MCE confirms or corrects one, this module (or the named setting) is the only place to
change, and the README's assumptions list says the same.
"""

from __future__ import annotations

from enum import StrEnum

# --- paths: tails under the version prefix (setting ``MCE_API_VERSION``, "v1.0" by default: the
# seed's page and the demo host use /v1.0, the v2.0 docs put /v2.0 in front of the same tails).
# The token path is a setting too (``MCE_TOKEN_PATH``, "/oauth/token"): it comes from public client
# code written against MCE's demo host, not from a docs page (contract section 3).
CREATE_TAIL = "/payment/crypto/createCryptoRefund"  # fact
CONFIRM_TAIL = "/payment/crypto/confirmCryptoRefund"  # assumed
GET_TAIL = "/payment/crypto/getCryptoRefund"  # assumed

# --- token call (contract section 3): form fields found in public client code; no grant_type ---
TOKEN_ID_FIELD = "client_id"  # noqa: S105 - a form field name, not a secret
TOKEN_SECRET_FIELD = "client_secret"  # noqa: S105 - a form field name, not a secret

IDEMPOTENCY_HEADER = "idempotency-key"  # fact (v2.1 "Idempotent Requests")
SUCCESS_CODES = frozenset({200, "200"})  # fact: both spellings appear in the docs


class Code(StrEnum):
    """Problem ``code`` values the pipeline branches on (all assumed except the idempotency one)."""

    NOT_PENDING = "CRYPTO_REFUND_NOT_PENDING"
    DUPLICATE_REFERENCE = "DUPLICATE_CLIENT_REFERENCE"
    ALREADY_CONFIRMED = "CRYPTO_REFUND_ALREADY_CONFIRMED"
    NOT_FOUND = "CRYPTO_REFUND_NOT_FOUND"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_ALREADY_USED"  # fact


# --- originalTransactionType (assumed) ---
ORIGINAL_TRANSACTION_TYPES = {1: "crypto deposit", 2: "crypto collection", 3: "crypto checkout"}

# --- refund status (assumed); unknown values are non-fatal and followed until final ---
STATUS_CREATED = 1
STATUS_PROCESSING = 2
STATUS_COMPLETED = 3
STATUS_FAILED = 4
STATUS_REJECTED = 5
STATUS_NAMES = {
    STATUS_CREATED: "created, awaiting confirmation",
    STATUS_PROCESSING: "confirmed, processing on chain",
    STATUS_COMPLETED: "completed",
    STATUS_FAILED: "failed",
    STATUS_REJECTED: "rejected or cancelled by the provider",
}
FINAL_STATUSES = frozenset({STATUS_COMPLETED, STATUS_FAILED, STATUS_REJECTED})

# --- HTTP statuses worth a retry (assumed, the industry norm) ---
RETRYABLE_HTTP = frozenset({429, 500, 502, 503, 504})
