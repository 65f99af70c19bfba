-- Cache lookup: one round trip for a hit, counted in the same script.
-- KEYS[1] entry (hash), KEYS[2] stampede lock, KEYS[3] stats (hash); all in one slot.
-- ARGV[1] mode: 'first' (may take the lock) or 'poll' (a waiter looking again)
-- ARGV[2] lock token, ARGV[3] lock TTL ms
-- ARGV[4] early-refresh factor in millionths: 1e6 * beta * -ln(u), u uniform in (0,1];
--         0 turns XFetch off
-- ARGV[5] stats TTL seconds
-- Reply: {state, status, content_type, body, age_ms} or {state}. States:
--   hit     fresh entry; serve it
--   stale   past its soft expiry, another request is refreshing it; serve it
--   refresh stale, and this request holds the lock: fetch, store, or fall back to it
--   early   fresh, but XFetch picked this request to refresh it ahead of expiry
--   fetch   no entry, this request holds the lock: fetch and store
--   wait    no entry, another request is fetching
--   gone    (poll) no entry and no lock: the fetcher did not store; go to the origin
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function count(field)
  redis.call('HINCRBY', KEYS[3], field, 1)
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end

local function take_lock()
  return redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3])
end

local e = redis.call('HMGET', KEYS[1], 'status', 'type', 'body', 'stored', 'soft', 'cost')
if e[1] then
  local age = now - tonumber(e[4])
  local soft = tonumber(e[5])
  local fresh = now < soft
  local early = ARGV[1] == 'first' and fresh and now + tonumber(ARGV[4]) / 1000000 * tonumber(e[6] or 0) >= soft
  if fresh and not early then
    count('hits')
    return {'hit', e[1], e[2], e[3], age}
  end
  if ARGV[1] == 'first' and take_lock() then
    return {fresh and 'early' or 'refresh', e[1], e[2], e[3], age}
  end
  if fresh then
    count('hits')
    return {'hit', e[1], e[2], e[3], age}
  end
  count('stale')
  return {'stale', e[1], e[2], e[3], age}
end

if ARGV[1] == 'poll' then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'wait'} end
  return {'gone'}
end
if take_lock() then return {'fetch'} end
return {'wait'}
