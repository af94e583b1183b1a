-- The prelude: prepended to every script of refunds/store/lua/ when it is loaded (see
-- refunds.store.scripts), so each script stays one atomic EVALSHA and every helper is written once.

-- now(): Redis TIME as epoch seconds (float), read at most once per script: the one clock every
-- host shares for due times, leases and ages, whatever the hosts' own clocks say.
local _now
local function now()
  if not _now then
    local t = redis.call('TIME')
    _now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return _now
end

-- push_history(rec, record_key, list_key, lines): append history lines with one RPUSH. A record
-- from the releases that kept its history inside the hash (field 'hist') has those lines moved
-- out first, so the list stays in order.
local function push_history(rec, record_key, list_key, lines)
  local all = {}
  if rec['hist'] then
    for line in string.gmatch(rec['hist'], '[^\n]+') do all[#all + 1] = line end
    redis.call('HDEL', record_key, 'hist')
    rec['hist'] = nil
  end
  for _, line in ipairs(lines) do all[#all + 1] = line end
  if #all > 0 then redis.call('RPUSH', list_key, unpack(all)) end
end

-- archive_record(stream, ref, rec, lines): queue a record write for the SQL archive (rp:arch, a
-- stream drained by refunds.archive.archiver): the record as written (rec, every hash field) and
-- the history lines the write appended. Each write bumps 'ver' and each line is one version, so
-- the archiver numbers the lines ver - #lines + 1 .. ver. Queued in the same script as the write:
-- both or neither.
local function archive_record(stream, ref, rec, lines)
  redis.call('XADD', stream, '*', 'k', 'r', 'ref', ref, 'v', rec['ver'] or '0',
             'h', table.concat(lines, '\n'), 'r', cjson.encode(rec))
end

