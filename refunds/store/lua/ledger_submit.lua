-- Intake: store a new record in 'received' with its timer, or answer the existing one's fp.
-- KEYS: record, timers, all, state set of the new state, history list
-- ARGV: ref, now, due in (seconds from Redis TIME), fp, history line, then field/value pairs
-- Answers the existing record's fingerprint, or false when the record was created.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], 'fp')
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('RPUSH', KEYS[5], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], string.format('%.6f', now() + tonumber(ARGV[3])), ARGV[1])
return false
