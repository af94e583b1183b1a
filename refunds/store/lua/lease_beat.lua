-- KEYS: record, timers. ARGV: lease token, lease ms, ref, version ('' = leave the timer), fence
--       ('' = none)
-- The step's heartbeat (and its start): renew the lease if it is still ours and, while the record
-- is still at the version the step last wrote or read, keep the refund's timer at the lease's
-- expiry (Redis TIME), so a worker that dies mid-step leaves a refund due within one short lease.
-- Once the step has written its outcome (a new version) the timer is the outcome's and is left
-- alone. Answers 1, or 0 when the lease is no longer ours.
local v = redis.call('HMGET', KEYS[1], 'lk', 'ver')
if v[1] ~= ARGV[1] then return 0 end
local due = string.format('%.6f', now() + tonumber(ARGV[2]) / 1000)
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'lku', due, 'start', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'lku', due)
end
if ARGV[4] ~= '' and v[2] == ARGV[4] then
  redis.call('ZADD', KEYS[2], 'XX', due, ARGV[3])
end
return 1
