-- KEYS[1] event hash, KEYS[2] archive queue. ARGV: body, sha256 of the raw body, now (s), ttl (s),
-- claim seconds, notificationId. A new event is queued for the SQL archive in the same step.
-- One atomic step decides what a delivery is: "new" (stored and claimed), "retry" (the earlier
-- delivery failed or was abandoned: claimed again), "duplicate" (same body, done or in flight),
-- "conflict" (same notificationId, another body: counted on the event, nothing stored over it).
-- An event without a status (half-written by the code before this script) is taken as new.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  redis.call('HSET', KEYS[1], 'body', ARGV[1], 'hash', ARGV[2], 'status', 'received',
             'received_at', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('XADD', KEYS[2], '*', 'k', 'w', 'nid', ARGV[6], 'body', ARGV[1], 'hash', ARGV[2],
             'at', ARGV[3])
  return 'new'
end
local hash = redis.call('HGET', KEYS[1], 'hash')
if (hash and hash ~= ARGV[2]) or (not hash and redis.call('HGET', KEYS[1], 'body') ~= ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'conflicts', 1)
  redis.call('HSET', KEYS[1], 'conflict_hash', ARGV[2], 'conflict_at', ARGV[3])
  return 'conflict'
end
local at = tonumber(redis.call('HGET', KEYS[1], 'received_at') or '0')
if status == 'error' or (status == 'received' and tonumber(ARGV[3]) - at > tonumber(ARGV[5])) then
  redis.call('HSET', KEYS[1], 'status', 'received', 'received_at', ARGV[3])
  return 'retry'
end
return 'duplicate'
