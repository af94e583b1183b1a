-- KEYS: tat. ARGV: interval seconds (0 = unlimited), max wait seconds. Returns {granted, wait}.
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now())
local wait = start - now()
if wait > tonumber(ARGV[2]) then return {0, tostring(wait)} end
local interval = tonumber(ARGV[1])
if interval > 0 or tat > now() then
  local nxt = start + interval
  redis.call('SET', KEYS[1], tostring(nxt), 'PX', math.ceil((nxt - now()) * 1000) + 1000)
end
return {1, tostring(wait)}
