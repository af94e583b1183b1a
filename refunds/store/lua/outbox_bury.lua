-- KEYS: outbox, dead, attempts, failing, dead info, archive queue. ARGV: member, at ('' = Redis
-- now).
-- Given up: out of the outbox into the dead letters, with its attempts, first failure and last
-- error, all in one step (a crash cannot leave it in both, or in neither).
local at = now()
if ARGV[2] ~= '' then at = tonumber(ARGV[2]) end
local attempts = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local first, err = at, ''
local old = redis.call('HGET', KEYS[4], ARGV[1])
if old then
  local f = cjson.decode(old)
  first = f['first'] or at
  err = f['error'] or ''
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], at, ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1],
  cjson.encode({attempts = attempts, error = err, first = first, at = at}))
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[6], '*', 'k', 'n', 'm', ARGV[1], 'o', 'dead', 'a', attempts, 'e', err)
return 1
