-- KEYS: record. ARGV: lease token. Release the lease if it is still ours (an expired one that
-- another step took is theirs). Answers 1 when released.
if redis.call('HGET', KEYS[1], 'lk') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lk', '', 'lku', '')
return 1
