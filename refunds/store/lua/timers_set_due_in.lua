-- KEYS: timer set. ARGV: seconds from Redis TIME, member.
local due = now() + tonumber(ARGV[1])
return redis.call('ZADD', KEYS[1], string.format('%.6f', due), ARGV[2])
