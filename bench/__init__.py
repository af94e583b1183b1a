"""Benchmarks of the refund pipeline: ``python -m bench.run [--quick] [--only NAME]``.

A script, not a test: it starts its own Redis, sandbox, workers and beat, measures, and writes the
figures next to their targets to ``bench/results/latest.json`` and ``latest.md``. It never asserts
a time; a missed target is reported as "missed".
"""
