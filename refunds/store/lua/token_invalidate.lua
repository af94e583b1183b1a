-- Compare-and-delete: forget the token only if it is still the one that was refused.
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
