-- Cache lookup: one round trip for a hit, counted in the same script; takes the
-- single-flight lock when this request must fetch.
-- KEYS[1] entry (a string: see entry.rs), KEYS[2] lock, KEYS[3] marker, KEYS[4] hits
-- counter, KEYS[5] stale counter; all in one slot.
-- ARGV[1] mode: 'first' (may refresh early) or 'poll' (a waiter looking again)
-- ARGV[2] lock token, ARGV[3] lock TTL ms
-- ARGV[4] early-refresh factor in millionths: 1e6 * beta * -ln(u), u uniform in (0,1];
--         0 turns XFetch off
-- ARGV[5] stats TTL seconds
-- ARGV[6..] standards mode: the request's fields, name/value pairs (see variant.lua)
-- Reply: {state, value, now_ms, now_us} (now_us: the fill's start, compared with purge
-- tombstones by the store script). States:
--   hit     fresh entry; serve it
--   stale   stale entry within its stale-while-revalidate window (or its stale-if-error
--           window while the origin is failing), another request is refreshing it
--   refresh stale, and this request holds the lock: revalidate, store, or fall back to it
--   early   fresh, but XFetch picked this request to refresh it ahead of expiry
--   fetch   no entry, this request holds the lock (value empty)
--   wait    another request holds the lock and nothing may be served meanwhile
--   pass    no entry, and the key is marked uncacheable: go to the origin, no lock
--   error   no usable entry, and the origin failed for this key moments ago: value is the
--           remembered failure
local now = now_ms

local function count(key)
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[5])
end

local function take_lock()
  return redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
end

-- Only the header is matched (anchored, so the body is neither scanned nor copied). A value
-- this script cannot read (another format version) counts as no entry: the store that
-- follows overwrites it.
local e = redis.pcall('GET', KEYS[1])
if type(e) == 'string' and string.sub(e, 1, 3) == 'cv\n' then
  e = redis.pcall('GET', variant_key(string.sub(e, 4), 6))
end
local soft, cost, swr, sie
if type(e) == 'string' then
  soft, cost, swr, sie = string.match(e, '^c2\n%d+\n%d+\n(%d+)\n(%d+)\n(%d+)\n(%d+)\n')
end
local m = redis.call('GET', KEYS[3])
local failing = m and m ~= 'pass'

if soft then
  soft = tonumber(soft)
  local fresh = now < soft
  local early = ARGV[1] == 'first' and fresh and now + tonumber(ARGV[4]) / 1000000 * tonumber(cost) >= soft
  if fresh and not early then
    count(KEYS[4])
    return {'hit', e, now, now_us}
  end
  if not failing and take_lock() then
    return {fresh and 'early' or 'refresh', e, now, now_us}
  end
  if fresh then
    count(KEYS[4])
    return {'hit', e, now, now_us}
  end
  if now < tonumber(swr) or (failing and now < tonumber(sie)) then
    count(KEYS[5])
    return {'stale', e, now, now_us}
  end
  if failing then return {'error', m, now, now_us} end
  return {'wait', '', now, now_us}
end

if m == 'pass' then return {'pass', '', now, now_us} end
if failing then return {'error', m, now, now_us} end
if take_lock() then return {'fetch', '', now, now_us} end
return {'wait', '', now, now_us}
