"""Development and test tooling: one local stack (processes, readiness, teardown) for the demo,
the tests, the benchmarks and the chaos harness. Never imported by the domain."""
