"""A local simulator of MetaComp's (MCE) crypto refund API, for tests, the demo and benchmarks.

A real HTTP server that follows ``provider-contract.md``: provider-shaped success envelopes and
RFC 7807 errors, stateful refunds whose status advances over time, idempotency keys, and switches
for faults (injected 409/429/500/502/503, lost and slow responses, latency, its own rate limit), the
signed Crypto Refund Webhook (with delays, reordering, duplicates, drops and retries), plus an
admin API under ``/sandbox``. Standard library only, and it never imports the pipeline it
exercises, so it cannot accidentally agree with the client's bugs.

Contract v2 (provider-contract.md 2, 3, 5, 6): the provider is served under ``/v1.0`` and
``/v2.0`` (same tails); Create Token is ``POST /{version}/oauth/token`` with form-encoded
``client_id`` and ``client_secret``; Create, Confirm and Get accept ``participantCode``; webhooks
carry ``X-Signature: t=<epoch ms>,v0=<hex HMAC-SHA256 of "{t}.{raw body}">``.
``GET /sandbox/requests`` shows the last requests per operation as received (credentials
masked), so tests can prove what a client sent.

Switches (``POST /sandbox/config``, see ``sandbox/config.py``), besides faults and webhook timing:

- ``token_shape``: ``oauth`` | ``envelope`` | ``envelope_snake`` | ``no_lifetime`` (the answer
  shapes a client must read);
- ``webhook_event_type`` (``crypto.refund.updated`` or ``.v2``), ``webhook_code_msg`` (top-level
  ``code``/``msg``), ``webhook_amounts_as_numbers`` / ``amounts_as_numbers`` (exact JSON number
  text), ``status_info`` (a ``statusInfo`` label);
- ``refund_overrides``: per clientReference (or ``"*"``) the exact text of ``amount``,
  ``currency``, ``feeAmount``, ``feeCurrency`` (tiny, huge, ``NaN``/``Infinity``, negative,
  5000 with an empty currency);
- ``confirm_async_seconds`` (Confirm answers status 1 for N s before 2), ``address_echo`` (Create
  answers the payer's source address as ``refundAddress``), ``other_refund_id`` (reference
  prefixes whose Get and webhooks name another id and hash), ``complete_unconfirmed_seconds`` (a
  refund completes, webhook included, N s after Create even if never confirmed),
  ``not_found_lag_seconds`` (Get says not found for N s after Create), ``duplicate_mode`` ``new``
  (de-duplicate on the idempotency key only: a new key makes a second refund for a reference).
"""

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer, make_server, serve

__all__ = ["SandboxConfig", "SandboxServer", "make_server", "serve"]
