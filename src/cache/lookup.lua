-- Cache lookup: one round trip for a hit, counted in the same script.
-- KEYS[1] entry (a string: see "Entry values" in mod.rs), KEYS[2] stampede lock,
-- KEYS[3] hits counter, KEYS[4] stale counter; all in one slot.
-- ARGV[1] mode: 'first' (may take the lock) or 'poll' (a waiter looking again)
-- ARGV[2] lock token, ARGV[3] lock TTL ms
-- ARGV[4] early-refresh factor in millionths: 1e6 * beta * -ln(u), u uniform in (0,1];
--         0 turns XFetch off
-- ARGV[5] stats TTL seconds
-- Reply: {state, entry value, now_ms} or {state}. States:
--   hit     fresh entry; serve it
--   stale   past its soft expiry, another request is refreshing it; serve it
--   refresh stale, and this request holds the lock: fetch, store, or fall back to it
--   early   fresh, but XFetch picked this request to refresh it ahead of expiry
--   fetch   no entry, this request holds the lock: fetch and store
--   wait    no entry, another request is fetching
--   gone    (poll) no entry and no lock: the fetcher did not store; go to the origin
local now = now_ms

local function count(key)
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[5])
end

local function take_lock()
  return redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
end

-- Only the header is matched (anchored, so the body is neither scanned nor copied). A value
-- this script cannot read (a hash from the older layout, another format version) counts
-- as no entry: the store that follows overwrites it.
local e = redis.pcall('GET', KEYS[1])
local stored, soft, cost
if type(e) == 'string' then
  stored, soft, cost = string.match(e, '^c1\n%d+\n(%d+)\n(%d+)\n(%d+)\n')
end
if stored then
  soft = tonumber(soft)
  local fresh = now < soft
  local early = ARGV[1] == 'first' and fresh and now + tonumber(ARGV[4]) / 1000000 * tonumber(cost) >= soft
  if fresh and not early then
    count(KEYS[3])
    return {'hit', e, now}
  end
  if ARGV[1] == 'first' and take_lock() then
    return {fresh and 'early' or 'refresh', e, now}
  end
  if fresh then
    count(KEYS[3])
    return {'hit', e, now}
  end
  count(KEYS[4])
  return {'stale', e, now}
end

if ARGV[1] == 'poll' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'wait'} end
  return {'gone'}
end
if take_lock() then return {'fetch'} end
return {'wait'}
