-- KEYS: outbox, dead, dead info. ARGV: members. Back into the outbox, due now (Redis time), with a
-- fresh give-up window; members that are not dead letters are skipped. Returns the ones moved.
local moved = {}
for _, member in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[2], member) == 1 then
    redis.call('HDEL', KEYS[3], member)
    redis.call('ZADD', KEYS[1], now(), member)
    table.insert(moved, member)
  end
end
return moved
