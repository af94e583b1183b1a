"""Read-only operations: counters, snapshot, metrics, health probe, logs."""
