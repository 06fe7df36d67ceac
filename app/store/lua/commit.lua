-- One atomic commit: offsets and versions are checked first, then every write, or none at all.
--
-- KEYS: clusters hash, versions hash, changes stream, outbox stream, offsets hash, generation,
--       times hash (partition -> "event time:active wall ms"), merge clock (last boundary),
--       config hash (version, body)
-- ARGV: changes maxlen; the writer (stored with each change, so its follower can skip it); the
--       generation the writer built on ("" = unchecked); the counts of expected pairs, offset
--       triples, upsert triples, deletions, outbox sextets and event-time pairs; the active
--       wall time; the merge clock move ("0" none, "1" from the expected boundary, "" = none
--       yet, to the new one); the config version expected ("" = unchecked) and a new config
--       body to store as the next version ("" = none); then those items flat, in that order:
--       expected   key, version           (version 0 = the key must not exist)
--       offsets    "topic:partition", first offset, last offset
--       upserts    key, new version, blob
--       deletions  key
--       outbox     event_id, kafka key, kafka value, timestamp, topic, headers (msgpack)
--       times      "topic:partition", newest event time applied from it
-- Returns {3, marker held} when the generation marker is not the writer's (the store lost its
-- data), {0} when applied, {1, key...} on a version conflict, {2, partition, stored} when a
-- first offset is not past the stored one (the batch is a replay, or partly one), {4, held}
-- when the merge clock is not at the expected boundary (another worker ran that pass), {5, held}
-- when the stored config is not at the expected version (a reload replaced it).
local clusters, versions, changes, outbox, offsets = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local times, clock, config = KEYS[7], KEYS[8], KEYS[9]
local maxlen, writer, generation = ARGV[1], ARGV[2], ARGV[3]
local n_expected, n_offsets = tonumber(ARGV[4]), tonumber(ARGV[5])
local n_upserts, n_deletions, n_outbox = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local n_times, active_ms = tonumber(ARGV[9]), ARGV[10]
local clock_move, clock_from, clock_to = ARGV[11], ARGV[12], ARGV[13]
local config_expected, config_body = ARGV[14], ARGV[15]
local expected_at = 16
local offsets_at = expected_at + 2 * n_expected
local upserts_at = offsets_at + 3 * n_offsets
local deletions_at = upserts_at + 3 * n_upserts
local outbox_at = deletions_at + n_deletions
local times_at = outbox_at + 6 * n_outbox

if generation ~= '' then
  local held = redis.call('GET', KEYS[6])
  if held ~= generation then
    return {3, held or ''}
  end
end

for i = offsets_at, upserts_at - 1, 3 do
  local stored = tonumber(redis.call('HGET', offsets, ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) <= stored then
    return {2, ARGV[i], tostring(stored)}
  end
end

local stale = {1}
for i = expected_at, offsets_at - 1, 2 do
  local current = tonumber(redis.call('HGET', versions, ARGV[i]) or '0')
  if current ~= tonumber(ARGV[i + 1]) then
    stale[#stale + 1] = ARGV[i]
  end
end
if #stale > 1 then
  return stale
end

if config_expected ~= '' then
  local held = tonumber(redis.call('HGET', config, 'version') or '0')
  if held ~= tonumber(config_expected) then
    return {5, tostring(held)}
  end
end

if clock_move == '1' then
  local held = redis.call('GET', clock) or ''
  if held ~= clock_from then
    return {4, held}
  end
  redis.call('SET', clock, clock_to)
end
if config_body ~= '' then
  redis.call('HSET', config, 'version', tonumber(config_expected) + 1, 'body', config_body)
end

for i = upserts_at, deletions_at - 1, 3 do
  redis.call('HSET', clusters, ARGV[i], ARGV[i + 2])
  redis.call('HSET', versions, ARGV[i], ARGV[i + 1])
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'k', ARGV[i], 'v', ARGV[i + 1],
             'w', writer)
end
for i = deletions_at, outbox_at - 1 do
  redis.call('HDEL', clusters, ARGV[i])
  redis.call('HDEL', versions, ARGV[i])
  redis.call('XADD', changes, 'MAXLEN', '~', maxlen, '*', 'k', ARGV[i], 'd', '1', 'w', writer)
end
for i = outbox_at, outbox_at + 6 * n_outbox - 1, 6 do
  redis.call('XADD', outbox, '*', 'event_id', ARGV[i], 'key', ARGV[i + 1],
             'value', ARGV[i + 2], 'timestamp', ARGV[i + 3],
             'topic', ARGV[i + 4], 'headers', ARGV[i + 5])
end
for i = offsets_at, upserts_at - 1, 3 do
  redis.call('HSET', offsets, ARGV[i], ARGV[i + 2])
end
for i = times_at, times_at + 2 * n_times - 1, 2 do
  local newest = tonumber(ARGV[i + 1])
  local stored = redis.call('HGET', times, ARGV[i])
  if stored then
    newest = math.max(newest, tonumber(string.match(stored, '^(-?%d+)')))
  end
  redis.call('HSET', times, ARGV[i], string.format('%d:%s', newest, active_ms))
end
return {0}
