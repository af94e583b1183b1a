-- KEYS: refused flag, probe slot. ARGV: pause seconds, now. Returns -1 when the token call may go
-- (no incident, or this caller took the probe slot), else milliseconds until the next probe.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', math.ceil(tonumber(ARGV[1]) * 1000)) then
  return -1
end
return math.max(1, redis.call('PTTL', KEYS[2]))
