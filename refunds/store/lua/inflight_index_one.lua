-- Index one refund in the in-flight index as its record stands now, atomically against the
-- transitions: in an in-flight state it is added (with its creation score from rp:all; an entry
-- present is kept), else removed.
-- KEYS: record, in-flight index, all. ARGV: ref, the in-flight states (',a,b,').
-- Answers 1 when added, -1 when removed, 0 when nothing changed.
local state = redis.call('HGET', KEYS[1], 'state')
if state and string.find(ARGV[2], ',' .. state .. ',', 1, true) then
  local created = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if not created then return 0 end
  return redis.call('ZADD', KEYS[2], 'NX', created, ARGV[1])
end
return -redis.call('ZREM', KEYS[2], ARGV[1])
