-- KEYS: attempts, failing, archive queue. ARGV: member, error (the failure is queued for the archive).
-- One failed attempt: count it, keep the first failure's time and the last error.
-- Returns {attempts, first failure, now} (times as strings: Lua numbers lose precision in replies).
local attempts = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local first = now()
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  first = cjson.decode(old)['first'] or now()
end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({first = first, error = ARGV[2]}))
redis.call('XADD', KEYS[3], '*', 'k', 'n', 'm', ARGV[1], 'o', 'failed', 'a', attempts, 'e', ARGV[2])
return {attempts, tostring(first), tostring(now())}
