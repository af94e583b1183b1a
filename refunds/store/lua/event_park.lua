-- KEYS: parked set, the refund's record. ARGV: notificationId, now, ttl, the record version the
-- caller read ('' = it read no record). Parks only if the record is still as the caller read it:
-- every step and operator action changes the version and then replays the parked set, so an event
-- is either parked before that change (and replayed after it) or refused here (0: the caller reads
-- the record again and applies). No event can be parked after the last replay and stay there.
local exists = redis.call('EXISTS', KEYS[2]) == 1
if ARGV[4] == '' then
  if exists then return 0 end
else
  local ver = redis.call('HGET', KEYS[2], 'ver') or (exists and '0') or ''
  if ver ~= ARGV[4] then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
