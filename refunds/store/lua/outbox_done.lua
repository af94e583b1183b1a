-- KEYS: outbox, attempts, failing, archive queue. ARGV: member. Delivered: forget the entry and its
-- failures; the outcome is queued for the SQL archive.
redis.call('XADD', KEYS[4], '*', 'k', 'n', 'm', ARGV[1], 'o', 'delivered',
           'a', redis.call('HGET', KEYS[2], ARGV[1]) or '0', 'e', '')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
