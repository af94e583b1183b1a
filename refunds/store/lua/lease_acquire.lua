-- KEYS: record, timers, history list, archive queue (an attempt begun is queued for the archive).
-- ARGV: lease token, lease ms, ref, start ('' = only take the lease and read), fence ('' = none: a
--       nudge), then the attempt to begin ('' = none): working state, the states it begins from
--       (',a,b,'), the history line for entering the working state, now, the field the record
--       must hold ('' = none), the provider statuses a record outside the working state must be
--       in when it has one (',0,1,', '' = any), the state sets' key prefix.
-- Reads the record and takes its lease in one script. Answers {0, ms until the lease expires}
-- when another step holds it, else {1, record (as written), started, begun, the record's
-- ``start`` before this script, held}; ``held`` is 0 when nothing was taken (no record, or a
-- stale or duplicate message, which does nothing).
-- With ``start``, the step's start is written in the same HSET: unless the fence is stale (not
-- the record's ``disp``) or already started (``start`` >= fence), the dispatch is recorded as
-- started and the refund's timer moves to the lease's expiry (Redis TIME); ``started`` is 1 when
-- that was done. With an attempt to begin, a record in one of its states (and meeting its
-- conditions) is moved to the working state with the attempt counted (``begun`` 1): the write a
-- step made in a round trip of its own before its provider call.
local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then return {1, raw, 0, 0, '0', 0} end
local rec = {}
for i = 1, #raw, 2 do rec[raw[i]] = raw[i + 1] end
local until_ = tonumber(rec['lku']) or 0
if (rec['lk'] or '') ~= '' and until_ > now() then
  return {0, math.floor((until_ - now()) * 1000)}
end
local before = rec['start'] or '0'
local due = string.format('%.6f', now() + tonumber(ARGV[2]) / 1000)
local sets = {'lk', ARGV[1], 'lku', due}
if ARGV[4] ~= '' and ARGV[5] ~= '' then
  local fence = tonumber(ARGV[5])
  if fence ~= (tonumber(rec['disp']) or 0) or (tonumber(before) or 0) >= fence then
    return {1, raw, 0, 0, before, 0}
  end
  sets[#sets + 1] = 'start'; sets[#sets + 1] = ARGV[5]
end
local begun = 0
local st, working = rec['state'], ARGV[6]
local function listed(list, value) return string.find(list, ',' .. value .. ',', 1, true) end
if ARGV[4] ~= '' and working ~= '' and listed(ARGV[7], st)
    and (ARGV[10] == '' or (rec[ARGV[10]] or '') ~= '')
    and (ARGV[11] == '' or st == working or (rec['pstatus'] or '') == ''
         or listed(ARGV[11], rec['pstatus'])) then
  local attempts = 1
  if st == working then attempts = (tonumber(rec['attempts']) or 0) + 1 end
  local more = {'attempts', tostring(attempts), 'state', working, 'updated', ARGV[9],
    'ver', tostring((tonumber(rec['ver']) or 0) + 1)}
  for _, v in ipairs(more) do sets[#sets + 1] = v end
  if st ~= working then
    push_history(rec, KEYS[1], KEYS[3], {ARGV[8]})
    redis.call('SREM', ARGV[12] .. st, ARGV[3])
    redis.call('SADD', ARGV[12] .. working, ARGV[3])
  end
  begun = 1
end
redis.call('HSET', KEYS[1], unpack(sets))
for j = 1, #sets, 2 do rec[sets[j]] = sets[j + 1] end
if begun == 1 then
  local lines = {}
  if st ~= working then lines = {ARGV[8]} end
  archive_record(KEYS[4], ARGV[3], rec, lines)
end
if begun == 1 then
  redis.call('ZADD', KEYS[2], due, ARGV[3])  -- an attempt always has a timer
elseif ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], 'XX', due, ARGV[3])
end
local out = {}
for f, v in pairs(rec) do out[#out + 1] = f; out[#out + 1] = v end
local started = 0
if ARGV[4] ~= '' then started = 1 end
return {1, out, started, begun, before, 1}
