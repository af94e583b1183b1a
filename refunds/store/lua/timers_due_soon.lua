-- KEYS: timer set. ARGV: seconds from Redis TIME, member. Bring an existing timer forward.
local due = now() + tonumber(ARGV[1])
return redis.call('ZADD', KEYS[1], 'XX', 'LT', string.format('%.6f', due), ARGV[2])
