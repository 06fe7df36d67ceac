-- Changes after a cursor, with the current blob of every key they name, in one round trip.
--
-- KEYS: changes stream, clusters hash
-- ARGV: cursor (a stream id, "0-0" = from the start), limit (entries to read at most), and a
--       writer whose entries to leave out ("" = none): a worker's own, already in its engine
-- Returns {0, new cursor, keys, blobs} (a missing blob means the key is now deleted), or
-- {1, cursor at the end} when entries after the cursor were trimmed away or the stream was
-- recreated since the cursor was taken: the caller must reload everything.
local changes, clusters = KEYS[1], KEYS[2]
local cursor, limit, skip = ARGV[1], tonumber(ARGV[2]), ARGV[3] or ''

local function less(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, a_seq, b_ms, b_seq = tonumber(a_ms), tonumber(a_seq), tonumber(b_ms), tonumber(b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

if redis.call('EXISTS', changes) == 0 then
  if cursor == '0-0' then
    return {0, cursor, {}, {}}
  end
  return {1, '0-0'}
end

local info = redis.call('XINFO', 'STREAM', changes)
local field = {}
for i = 1, #info, 2 do
  field[info[i]] = info[i + 1]
end
local last = field['last-generated-id']
local first = field['first-entry'] and field['first-entry'][1]
local added = tonumber(field['entries-added'] or '0')
local trimmed = added > tonumber(field['length'])
-- Trimming removes the oldest entries, so a cursor before the first retained entry may have
-- missed some: reset (at the exact trim edge this resets without need, which is only slower).
-- Without trimming, only "0-0" comes before the first entry: any other such cursor belongs to
-- a stream deleted since (the namespace was cleared). Redis 6 reports no entries-added; there
-- a "0-0" cursor is trusted.
local stale = less(last, cursor)
  or (first and less(cursor, first) and (cursor ~= '0-0' or trimmed))
if stale then
  return {1, last}
end

local entries = redis.call('XRANGE', changes, '(' .. cursor, '+', 'COUNT', limit)
if #entries == 0 then
  return {0, cursor, {}, {}}
end
local keys, seen = {}, {}
local function writer(fields)
  for i = 3, #fields - 1, 2 do
    if fields[i] == 'w' then
      return fields[i + 1]
    end
  end
  return ''  -- written before entries named their writer
end
for _, entry in ipairs(entries) do
  local key = entry[2][2]
  if not seen[key] and (skip == '' or writer(entry[2]) ~= skip) then
    seen[key] = true
    keys[#keys + 1] = key
  end
end
local blobs = {}
for i, key in ipairs(keys) do
  blobs[i] = redis.call('HGET', clusters, key)
end
return {0, entries[#entries][1], keys, blobs}
