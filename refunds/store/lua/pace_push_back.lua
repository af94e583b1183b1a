-- KEYS: tat. ARGV: seconds. Moves the schedule to at least now + seconds.
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ = now() + tonumber(ARGV[1])
if until_ > tat then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return tostring(math.max(until_, tat) - now())
