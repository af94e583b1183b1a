-- KEYS: outbox. ARGV: member, delay seconds. Come due again ``delay`` after Redis' now.
local due = now() + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], due, ARGV[1])
return tostring(due)
