-- Evict one archived final record from Redis (it stays in the SQL archive; its reference joins
-- the tombstones, so intake still finds it).
-- KEYS: record, history list, legacy history, all, tombstones, outbox, conflicts, timers, parked.
-- ARGV: ref, archived version, final states (',a,b,'), state set prefix, refund id index prefix,
--       the two outbox members of the refund.
-- Answers 1 (evicted), 0 (no record), -1 (version is not the archived one), -2 (not final),
-- -3 (a step holds its lease), -4 (marked as a provider conflict), -5 (a notification pending).
local r = redis.call('HMGET', KEYS[1], 'ver', 'state', 'rid', 'lk')
if not r[2] then return 0 end
if r[1] ~= ARGV[2] then return -1 end
if not string.find(ARGV[3], ',' .. r[2] .. ',', 1, true) then return -2 end
if (r[4] or '') ~= '' then return -3 end
if redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 1 then return -4 end
if redis.call('ZSCORE', KEYS[6], ARGV[6]) or redis.call('ZSCORE', KEYS[6], ARGV[7]) then
  return -5
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[9])
redis.call('SREM', ARGV[4] .. r[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
if r[3] and redis.call('GET', ARGV[5] .. r[3]) == ARGV[1] then
  redis.call('DEL', ARGV[5] .. r[3])
end
redis.call('SADD', KEYS[5], ARGV[1])
return 1
