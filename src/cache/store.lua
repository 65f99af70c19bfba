-- After an origin fetch: store the entry, a marker or nothing, release the lock if this
-- request holds it, count the outcome. One round trip; all keys in the target's slot.
-- KEYS[1] entry, KEYS[2] lock, KEYS[3] marker, KEYS[4] variants set, KEYS[5] the target's
-- purge tombstone, KEYS[6] the bucket's purge-all tombstone, KEYS[7] outcome counter,
-- KEYS[8] origin_fetches counter, KEYS[9..] pairs: tag set, tag tombstone
-- ARGV[1] lock token ('' when this request holds no lock)
-- ARGV[2] action: 'store', 'mark' (a marker: pass or failure), 'evict' or 'skip'
-- ARGV[3] stats TTL seconds
-- ARGV[4] Redis microseconds when this request's fill started (its lookup's now_us)
-- mark:  ARGV[5] marker value, ARGV[6] marker TTL ms
-- store: ARGV[5] status, ARGV[6] header lines (see entry.rs), ARGV[7] body,
--        ARGV[8] age on arrival ms, ARGV[9] fresh ms, ARGV[10] key TTL ms,
--        ARGV[11] stale-while-revalidate ms, ARGV[12] stale-if-error ms, ARGV[13] cost ms
--        ARGV[14] standards mode: the Vary field names ('' none; see variant.lua),
--        ARGV[15] most variants per target, ARGV[16..] the request's fields in pairs
-- Reply: 1 if stored, 0 if not (no lock, or a purge since the fill started).
-- Only the current lock holder may write, and only when no purge of the target, of one of
-- its tags, or of everything happened since its fill started: a purge is never undone by
-- a fill that was already in flight.
local now = now_ms
local action = ARGV[2]
local holder = ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1]
local start = tonumber(ARGV[4])

local function purged_since(key)
  local t = redis.call('GET', key)
  return t and tonumber(t) >= start
end

local allowed = holder and not purged_since(KEYS[5]) and not purged_since(KEYS[6])
if allowed and action == 'store' then
  for i = 10, #KEYS, 2 do
    if purged_since(KEYS[i]) then allowed = false end
  end
end

local stored = 0
if action == 'evict' then
  -- Deleting is always safe, lock or not.
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SREM', KEYS[4], KEYS[1])
elseif allowed and action == 'mark' then
  redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6])
elseif allowed and action == 'store' then
  local hard = tonumber(ARGV[10])
  local soft = now + tonumber(ARGV[9])
  local header = string.format('c2\n%d\n%d\n%d\n%d\n%d\n%d\n', tonumber(ARGV[5]),
    now - tonumber(ARGV[8]), soft, tonumber(ARGV[13]), soft + tonumber(ARGV[11]),
    soft + tonumber(ARGV[12]))
  local key = KEYS[1]
  if ARGV[14] and ARGV[14] ~= '' then
    key = variant_key(ARGV[14], 16)
    redis.call('SET', KEYS[1], 'cv\n' .. ARGV[14], 'PX', hard)
    -- At most ARGV[15] variants: past it, evict one at random.
    if redis.call('SISMEMBER', KEYS[4], key) == 0 and redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[15]) then
      local victim = redis.call('SPOP', KEYS[4])
      if victim then redis.call('DEL', victim) end
    end
  end
  redis.call('SET', key, header .. ARGV[6] .. ARGV[7], 'PX', hard)
  redis.call('DEL', KEYS[3])
  stored = 1
  local sets = {KEYS[4]}
  for i = 9, #KEYS, 2 do sets[#sets + 1] = KEYS[i] end
  for _, set in ipairs(sets) do
    redis.call('SADD', set, key)
    -- A set lives as long as its longest-lived entry.
    if redis.call('PTTL', set) < hard then redis.call('PEXPIRE', set, hard) end
    -- Keep sets from collecting expired entries: check two members at random.
    for _, member in ipairs(redis.call('SRANDMEMBER', set, 2)) do
      if redis.call('EXISTS', member) == 0 then redis.call('SREM', set, member) end
    end
  end
end

if holder then redis.call('DEL', KEYS[2]) end
for i = 7, 8 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return stored
