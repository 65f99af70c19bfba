-- Prelude of issue.lua and verify.lua, after CLOCK and the rate limiter's gcra(): the lane
-- of this request and the limits they share. Every key carries the subject's shard hash tag.
--
-- KEYS[1] the subject's known clients (sorted set: client id -> known until, ms)
-- KEYS[2] the client's issue budget, KEYS[3] its failure budget (token buckets)
-- KEYS[4] the shard's outbox stream
-- KEYS[5..8] lane "o" (other clients' codes): code state, resend cooldown, issue budget,
--            failure guard
-- KEYS[9..12] lane "k" (known clients, codes and links): the same four
-- KEYS[13] a link token's pointer
-- KEYS[14..16] lane "l" (other clients' links): code state, resend cooldown, issue budget;
--              its guard is lane "o"'s, which a verified link resets but never locks it
-- ARGV[1] the client id ('' when the caller gave none)
local now = now_ms
local hour_us = 3600000000
local client = ARGV[1]
local known = false
if client ~= '' then
  local known_until = tonumber(redis.call('ZSCORE', KEYS[1], client))
  known = known_until ~= nil and known_until > now
end
local lane, K_CODE, K_COOLDOWN, K_BUDGET, K_GUARD

-- Picks the lane for a code or link: known clients have theirs; other clients' links are
-- apart from their codes, so guesses at codes never lock, burn or replace a link.
local function use_lane(format)
  if known then
    lane = 9
  elseif format == 'link' then
    lane = 14
  else
    lane = 5
  end
  K_CODE, K_COOLDOWN, K_BUDGET = KEYS[lane], KEYS[lane + 1], KEYS[lane + 2]
  K_GUARD = lane == 14 and KEYS[8] or KEYS[lane + 3]
end

-- How long the lane is locked out after too many failed verifications (0: not locked).
-- Links cannot be guessed: their lane is never locked.
local function locked_for()
  if lane == 14 then
    return 0
  end
  local u = tonumber(redis.call('HGET', K_GUARD, 'locked_until'))
  if u and u > now then
    return u - now
  end
  return 0
end

-- A budget of `per_hour` events as the rate limiter's token bucket: up to `per_hour` at
-- once, one more every hour / per_hour. See gcra() for what it returns.
local function budget(key, per_hour)
  return gcra(key, hour_us / per_hour, per_hour, 1)
end
