-- Issue a one-time code or link for one subject and purpose in the request's lane: lockout
-- (codes only), client budget, cooldown, the lane's issue budget, stored state and (when it is
-- the delivery channel) the outbox entry, atomically. After lanes.lua.
--
-- ARGV: 2 keyed hash of the code (hex), 3 ttl ms, 4 cooldown ms, 5 max issues per hour,
--       6 max attempts, 7 format, 8 outbox MAXLEN (0: no outbox entry), 9 outbox retention ms,
--       10 subject, 11 purpose, 12 channel, 13 the plain code (outbox entry only),
--       14 delivery id, 15 client issues per hour
-- Returns {1, expires_at_ms, lane} or {0, "locked" | "client" | "cooldown" | "hourly" |
-- "outbox_full", retry_after_ms}.
local ttl = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local id = ARGV[14]
use_lane(ARGV[7])

local locked = locked_for()
if locked > 0 then
  return {0, 'locked', locked}
end
local client_budget
if client ~= '' then
  client_budget = budget(KEYS[2], tonumber(ARGV[15]))
  if not client_budget[1] then
    return {0, 'client', client_budget[6]}
  end
end
local cooldown_left = redis.call('PTTL', K_COOLDOWN)
if cooldown_left > 0 then
  return {0, 'cooldown', cooldown_left}
end
local lane_budget = budget(K_BUDGET, tonumber(ARGV[5]))
if not lane_budget[1] then
  return {0, 'hourly', lane_budget[6]}
end

local maxlen = tonumber(ARGV[8])
local retention = tonumber(ARGV[9])
if maxlen > 0 then
  -- No MAXLEN trim: it would drop undelivered codes under a flood. Entries older than the
  -- longest-lived code are worthless and removed here (XRANGE + XDEL: Redis 5 and later,
  -- unlike XTRIM MINID, which needs 6.2); a full stream refuses new codes instead.
  local old = redis.call('XRANGE', KEYS[4], '-', string.format('%.0f', now - retention), 'COUNT', 100)
  for _, entry in ipairs(old) do
    redis.call('XDEL', KEYS[4], entry[1])
  end
  if redis.call('XLEN', KEYS[4]) >= maxlen then
    return {0, 'outbox_full', 1000}
  end
end

local expires_at = string.format('%.0f', now + ttl)
-- State first: if a later write fails (OOM), no plain code has been written for a code that
-- is not stored. Only the keyed hash of the code is kept here.
redis.call('DEL', K_CODE)
redis.call('HSET', K_CODE, 'hmac', ARGV[2], 'attempts_left', ARGV[6], 'format', ARGV[7], 'delivery', id)
redis.call('PEXPIRE', K_CODE, ttl)
if cooldown > 0 then
  redis.call('SET', K_COOLDOWN, id, 'PX', cooldown)
end
lane_budget[7]()
if client_budget then
  client_budget[7]()
end
-- A link token also gets a pointer, found from the token alone (KEYS[13], same slot), so it
-- verifies without the subject: to this code state, its guard, purpose and subject.
if ARGV[7] == 'link' then
  redis.call('DEL', KEYS[13])
  redis.call('HSET', KEYS[13], 'd', id, 'p', ARGV[11], 's', ARGV[10], 'k', K_CODE, 'g', K_GUARD)
  redis.call('PEXPIRE', KEYS[13], ttl)
end

if maxlen > 0 then
  redis.call('XADD', KEYS[4], '*', 'id', id, 'subject', ARGV[10], 'purpose', ARGV[11],
    'channel', ARGV[12], 'format', ARGV[7], 'code', ARGV[13], 'expires_at_ms', expires_at)
  redis.call('PEXPIRE', KEYS[4], retention)
end
return {1, expires_at, lane}
