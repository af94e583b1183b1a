-- KEYS: record, timers, old state set, new state set, outbox, history list, legacy history string,
--       parked events, archive queue[, refund id index], in-flight index (always last)
-- (the refund id key only when the transition sets a cryptoRefundId: SET NX, the first reference
-- wins)
-- ARGV: ref, expected state, target state, now, timer action ('set', 'clear', 'keep'; '+dispatch'
--       appended: also write a new dispatch id), due (epoch seconds, or '+seconds' from Redis
--       TIME), H history lines, N sets, M deletes, K outbox members, step lease token to release
--       ('' = none), answer the history ('1' or ''), then the H lines, N field/value pairs, M
--       field names, K members, and last the in-flight index's change ('' none, '-' remove, else
--       the creation time to add with: store.inflight.index_change).
-- Answers {1, the record as written (field/value pairs), its history ('' unless asked), parked}
-- or {0, the current state}. ``parked`` is 1/0 (events parked for the refund) when a release was
-- asked, -1 when not. The lease is released (its fields emptied in the same HSET) only if still
-- ours: one that expired and another step took is theirs.
-- One HGETALL reads the record (state, version, dispatch id, the fields to delete: only present
-- ones are deleted); one HSET writes every field with the new state, time and version (one
-- version per history line: a chained transition, say created then confirming, counts two); the
-- history lines go out in one RPUSH. The record is answered from what was read and written (no
-- read back); the history only when asked (LRANGE), since a step never needs it.
local h, n, m, k = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local flat = redis.call('HGETALL', KEYS[1])
local rec = {}
for j = 1, #flat, 2 do rec[flat[j]] = flat[j + 1] end
local current = rec['state']
if not current then return {0, ''} end
if current ~= ARGV[2] then return {0, current} end
local i = 13
local lines = {}
for j = 1, h do lines[#lines + 1] = ARGV[i]; i = i + 1 end
local sets = {}
for j = 1, n do
  sets[#sets + 1] = ARGV[i]; sets[#sets + 1] = ARGV[i + 1]; i = i + 2
end
sets[#sets + 1] = 'state'; sets[#sets + 1] = ARGV[3]
sets[#sets + 1] = 'updated'; sets[#sets + 1] = ARGV[4]
sets[#sets + 1] = 'ver'; sets[#sets + 1] = tostring((tonumber(rec['ver']) or 0) + math.max(h, 1))
local timer = ARGV[5]
if string.sub(timer, -9) == '+dispatch' then
  -- The step nudges the next one: that message is a dispatch of its own, fenced like the tick's.
  sets[#sets + 1] = 'disp'; sets[#sets + 1] = tostring((tonumber(rec['disp']) or 0) + 1)
  timer = string.sub(timer, 1, -10)
end
if ARGV[11] ~= '' and rec['lk'] == ARGV[11] then
  -- The step's last write releases its lease in the same HSET.
  sets[#sets + 1] = 'lk'; sets[#sets + 1] = ''
  sets[#sets + 1] = 'lku'; sets[#sets + 1] = ''
end
redis.call('HSET', KEYS[1], unpack(sets))
for j = 1, #sets, 2 do rec[sets[j]] = sets[j + 1] end
-- Delete only the fields that are there (most updates clear an error that was never set).
local dels = {}
for j = 1, m do
  if rec[ARGV[i]] then dels[#dels + 1] = ARGV[i]; rec[ARGV[i]] = nil end
  i = i + 1
end
if #dels > 0 then redis.call('HDEL', KEYS[1], unpack(dels)) end
if #KEYS > 10 then redis.call('SET', KEYS[10], ARGV[1], 'NX') end
if k > 0 then
  local due = string.format('%.6f', now())
  local members = {}
  for j = 1, k do members[#members + 1] = due; members[#members + 1] = ARGV[i]; i = i + 1 end
  redis.call('ZADD', KEYS[5], unpack(members))
end
push_history(rec, KEYS[1], KEYS[6], lines)
archive_record(KEYS[9], ARGV[1], rec, lines)
if ARGV[2] ~= ARGV[3] then
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('SADD', KEYS[4], ARGV[1])
  local inflight = ARGV[#ARGV]
  if inflight == '-' then
    redis.call('ZREM', KEYS[#KEYS], ARGV[1])
  elseif inflight ~= '' then
    redis.call('ZADD', KEYS[#KEYS], inflight, ARGV[1])
  end
end
if timer == 'set' then
  local due = ARGV[6]
  if string.sub(due, 1, 1) == '+' then
    -- A relative due time: from Redis TIME, the one clock every host shares.
    due = string.format('%.6f', now() + tonumber(string.sub(due, 2)))
  end
  redis.call('ZADD', KEYS[2], due, ARGV[1])
elseif timer == 'clear' then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local parked = -1
if ARGV[11] ~= '' then
  -- The step's last write also says whether webhooks wait for the refund.
  parked = redis.call('EXISTS', KEYS[8])
end
local hist = ''
if ARGV[12] ~= '' then
  hist = redis.call('GET', KEYS[7]) or ''
  local listed = redis.call('LRANGE', KEYS[6], 0, -1)
  if #listed > 0 then hist = hist .. '\n' .. table.concat(listed, '\n') end
end
-- The record as written, from the hash read at the start and this script's own writes (the
-- script is atomic: no other write came between): no HGETALL to read it back.
local out = {}
for f, v in pairs(rec) do out[#out + 1] = f; out[#out + 1] = v end
return {1, out, hist, parked}
