-- KEYS: attempts, failing. ARGV: member, error.
-- One failed attempt: count it, keep the first failure's time and the last error.
-- Returns {attempts, first failure, now} (times as strings: Lua numbers lose precision in replies).
local attempts = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
local first = now()
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  first = cjson.decode(old)['first'] or now()
end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode({first = first, error = ARGV[2]}))
return {attempts, tostring(first), tostring(now())}
