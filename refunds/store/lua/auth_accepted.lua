-- KEYS: refused flag, probe slot. Ends an incident; returns 1 when there was one.
local had = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return had
