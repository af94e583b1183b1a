-- Intake: store a new record in 'received' with its timer, or answer the existing one's fp.
-- One original payment is refunded under one reference: the payment index (KEYS[6]) names the
-- reference that holds the payment; another reference for it is refused (nothing written) unless
-- the holder was cancelled.
-- KEYS: record, timers, all, state set of the new state, history list, payment index, in-flight
--       index, archive queue, archived references (tombstones)
-- ARGV: ref, now, due in (seconds from Redis TIME), fp, history line, record key prefix, then
--       field/value pairs
-- Answers the existing record's fingerprint, '!archived' (the reference left Redis for the
-- archive: the caller compares with the archived record), {'payment', the reference that holds
-- the payment}, or false when the record was created. The new record is queued for the archive.
-- A payment whose holder left Redis for the archive stays held (its index entry is kept).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], 'fp')
end
if redis.call('SISMEMBER', KEYS[9], ARGV[1]) == 1 then return '!archived' end
local holder = redis.call('GET', KEYS[6])
if holder and holder ~= ARGV[1]
    and redis.call('HGET', ARGV[6] .. holder, 'state') ~= 'cancelled' then
  return {'payment', holder}
end
redis.call('SET', KEYS[6], ARGV[1])
local fields = {}
local rec = {}
for i = 7, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]; fields[#fields + 1] = ARGV[i + 1]; rec[ARGV[i]] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('RPUSH', KEYS[5], ARGV[5])
archive_record(KEYS[8], ARGV[1], rec, {ARGV[5]})
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[7], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], string.format('%.6f', now() + tonumber(ARGV[3])), ARGV[1])
return false
