-- KEYS: outbox, attempts, failing. ARGV: member. Delivered: forget the entry and its failures.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
