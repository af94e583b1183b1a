"""The only code that knows Redis keys: records, timers, outbox, webhook events, pacing, tokens."""
