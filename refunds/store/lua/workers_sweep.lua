-- KEYS: the live-workers zset, the timers zset.
-- ARGV: seconds without a beat after which a worker counts as gone, the held-hash key prefix,
--       the record key prefix, how many gone workers to handle in this call.
-- Answers a flat list: worker name, seconds since its last beat, the references made due, '' (a
-- separator), ...
-- For each gone worker: each step message it held whose dispatch is still the refund's current
-- one ('disp' = the message's fence) and never started ('start' below it) was lost with the
-- worker (its message sits in the broker's unacked set until the visibility timeout). The refund
-- is made due now, so the tick dispatches it again at once, and the dispatch is recorded as lost
-- ('lost' = its fence): the claim counts dispatches that neither started nor were lost when it
-- doubles its lease, so a lost dispatch does not double the next one. A message that did start
-- is left to its step lease (a slow worker's step may still be running: only the lease may say
-- it is over). The worker's entries are then removed; a worker that was only slow writes them
-- again at its next beat.
local cutoff = now() - tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', cutoff),
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for i = 1, #gone, 2 do
  local name, seen = gone[i], tonumber(gone[i + 1])
  out[#out + 1] = name
  out[#out + 1] = string.format('%.3f', now() - seen)
  local held = redis.call('HGETALL', ARGV[2] .. name)
  for j = 1, #held, 2 do
    local ref, fence = held[j], tonumber(held[j + 1])
    local rec = redis.call('HMGET', ARGV[3] .. ref, 'disp', 'start', 'lost')
    if fence and tonumber(rec[1]) == fence and (tonumber(rec[2]) or 0) < fence
        and (tonumber(rec[3]) or 0) < fence then
      redis.call('HSET', ARGV[3] .. ref, 'lost', tostring(fence))
      if redis.call('ZSCORE', KEYS[2], ref) then  -- final or held refunds have no timer
        redis.call('ZADD', KEYS[2], 'XX', string.format('%.6f', now()), ref)
        out[#out + 1] = ref
      end
    end
  end
  out[#out + 1] = ''
  redis.call('DEL', ARGV[2] .. name)
  redis.call('ZREM', KEYS[1], name)
end
return out
