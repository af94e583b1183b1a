"""A local simulator of MetaComp's (MCE) crypto refund API, for tests, the demo and benchmarks.

A real HTTP server that follows ``provider-contract.md``: provider-shaped success envelopes and
RFC 7807 errors, stateful refunds whose status advances over time, idempotency keys, and switches
for faults (injected 429/500/502/503, lost and slow responses, latency, its own rate limit), the
signed Crypto Refund Webhook (with delays, reordering, duplicates, drops and retries), plus an
admin API under ``/sandbox``. Standard library only, and it never imports the pipeline it
exercises, so it cannot accidentally agree with the client's bugs.
"""

from sandbox.config import SandboxConfig
from sandbox.server import SandboxServer, make_server, serve

__all__ = ["SandboxConfig", "SandboxServer", "make_server", "serve"]
