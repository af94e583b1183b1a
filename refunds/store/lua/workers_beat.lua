-- KEYS: the live-workers zset, this worker's held-dispatches hash.
-- ARGV: worker name, seconds the held hash outlives its last beat, then ref, fence, ref, fence...
-- A worker's liveness beat: its name scored with Redis TIME in the zset, and the step messages it
-- holds now (reserved or running: ref -> the dispatch id the message carries) written over the
-- previous list, so a worker that dies leaves behind exactly what it held at its last beat.
redis.call('ZADD', KEYS[1], string.format('%.6f', now()), ARGV[1])
redis.call('DEL', KEYS[2])
if #ARGV > 2 then
  redis.call('HSET', KEYS[2], unpack(ARGV, 3))
  redis.call('PEXPIRE', KEYS[2], math.floor(tonumber(ARGV[2]) * 1000))
end
return 1
