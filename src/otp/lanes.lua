-- Prelude of issue.lua and verify.lua: the lane of this request and the limits they share.
-- Every key carries the subject's shard hash tag.
--
-- KEYS[1] the subject's known clients (sorted set: client id -> known until, ms)
-- KEYS[2] the client's issues in the last hour (sorted set), KEYS[3] its failed verifications
-- KEYS[4] the shard's outbox stream
-- KEYS[5..8] lane "o" (other clients): code state, resend cooldown, hourly log, failure guard
-- KEYS[9..12] lane "k" (known clients): the same four
-- ARGV[1] the client id ('' when the caller gave none)
local now = now_ms
local hour = 3600000
local client = ARGV[1]
local lane = 5
if client ~= '' then
  local known_until = tonumber(redis.call('ZSCORE', KEYS[1], client))
  if known_until and known_until > now then
    lane = 9
  end
end
local K_CODE, K_COOLDOWN, K_HOURLY, K_GUARD = KEYS[lane], KEYS[lane + 1], KEYS[lane + 2], KEYS[lane + 3]
local stamp = string.format('%.0f', now_us)

-- How long the lane is locked out after too many failed verifications (0: not locked).
local function locked_for()
  local u = tonumber(redis.call('HGET', K_GUARD, 'locked_until'))
  if u and u > now then
    return u - now
  end
  return 0
end

-- 0 when a log of the last hour has room, else the ms until its oldest entry leaves.
local function log_full(key, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - hour)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + hour - now)
  end
  return 0
end

local function log_add(key, member)
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, hour)
end
