-- KEYS: timer set, tick heartbeat key ('' = none).
-- ARGV: lease seconds, limit, record key prefix ('' = do not read states), '1' = check the step
--       leases and write fences ('' = neither)
-- Answers a flat list: ref, state ('' when the record is gone or states were not asked), fence
-- (the dispatch id written for this claim, 0 when none), ...
-- The clock is Redis TIME (one clock for every host). With the lease check, a due refund whose
-- step lease is still held (a step is running and its heartbeat renews it: fields ``lk``/``lku``
-- of the record, see ``store.locks``) is not handed out: its timer moves to when that lease would
-- expire. Every other claimed refund gets a new dispatch id
-- (HINCRBY 'disp'), so a message of an older dispatch is recognised as stale by the step.
-- One ZADD for the whole batch (not one per member): the claim is one script, one write. The
-- record keys are built from the prefix inside the script, since the claimed references are not
-- known before it runs (fine on one Redis or Sentinel; Redis Cluster is not used).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now()),
  'LIMIT', 0, tonumber(ARGV[2]))
local leased = string.format('%.6f', now() + tonumber(ARGV[1]))
local args = {}
local out = {}
for _, ref in ipairs(due) do
  local rec = {}
  local held = 0
  if ARGV[3] ~= '' then
    -- One read of the state and, for a fenced claim, the dispatch counters and the step lease.
    if ARGV[4] ~= '' then
      rec = redis.call('HMGET', ARGV[3] .. ref, 'state', 'disp', 'start', 'lk', 'lku', 'lost')
      if (rec[4] or '') ~= '' and (tonumber(rec[5]) or 0) > now() then held = tonumber(rec[5]) end
    else
      rec = {redis.call('HGET', ARGV[3] .. ref, 'state')}
    end
  end
  if held > 0 then
    redis.call('ZADD', KEYS[1], 'XX', string.format('%.6f', held), ref)
  else
    out[#out + 1] = ref
    local state = rec[1] or ''
    out[#out + 1] = state
    local lease = leased
    if ARGV[4] ~= '' and state ~= '' then
      -- Dispatches that never started (a backlog) double the next lease, so a queue that is
      -- slower than the lease gets one more message per doubling, not per tick. A dispatch known
      -- lost with its worker ('lost', written by the worker sweep: store.workers) is no backlog:
      -- it does not count.
      local waiting = (tonumber(rec[2]) or 0)
        - math.max(tonumber(rec[3]) or 0, tonumber(rec[6]) or 0)
      if waiting > 0 then
        lease = string.format('%.6f', now() + tonumber(ARGV[1]) * math.min(2 ^ waiting, 16))
      end
      out[#out + 1] = redis.call('HINCRBY', ARGV[3] .. ref, 'disp', 1)
    else
      out[#out + 1] = 0
    end
    args[#args + 1] = lease; args[#args + 1] = ref
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], 'XX', unpack(args)) end
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], string.format('%.6f', now())) end
return out
