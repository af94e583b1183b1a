-- KEYS: tat. Seconds until the next slot is free (0 when free now). Reads only.
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
return tostring(math.max(0, tat - now()))
