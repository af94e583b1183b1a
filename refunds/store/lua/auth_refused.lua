-- KEYS: refused flag, probe slot, tat. ARGV: pause seconds, flag ttl ms, now (for the flag's value).
-- Raises the flag (1 when this call raised it: the caller logs), restarts the probe slot so the
-- next token call is one pause from now, and pushes the call schedule back by the pause.
local first = redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[2])
if not first then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local pause = tonumber(ARGV[1])
redis.call('SET', KEYS[2], ARGV[3], 'PX', math.ceil(pause * 1000))
local tat = tonumber(redis.call('GET', KEYS[3]) or '0')
if now() + pause > tat then
  redis.call('SET', KEYS[3], tostring(now() + pause), 'PX', math.ceil(pause * 1000) + 1000)
end
if first then return 1 end
return 0
