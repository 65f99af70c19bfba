-- Check and consume a code in one step, so that of any number of concurrent verifies with the
-- right code exactly one succeeds, and wrong guesses are counted without loss.
--
-- KEYS[1] code state, KEYS[2] resend cooldown, KEYS[3] issues in the last hour (as issue.lua)
-- ARGV[1] keyed hash of the submitted code (hex), ARGV[2] max issues per hour
-- Returns {status, attempts_left, retry_after_ms}: status 0 no active code, 1 verified (the
-- code is deleted), 2 wrong, 3 locked (burned; it stays burned until its TTL ends).
local state = redis.call('HMGET', KEYS[1], 'hmac', 'attempts_left')
local stored, left = state[1], tonumber(state[2])
if not left then
  return {0, 0, 0}
end

-- When a new code may be issued: the cooldown, or the hourly cap's oldest entry ageing out.
local function retry_after()
  local wait = math.max(0, redis.call('PTTL', KEYS[2]))
  local now = now_ms
  local since = now - 3600000
  if redis.call('ZCOUNT', KEYS[3], '(' .. string.format('%.0f', since), '+inf') >= tonumber(ARGV[2]) then
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. string.format('%.0f', since), '+inf',
      'WITHSCORES', 'LIMIT', 0, 1)
    wait = math.max(wait, tonumber(oldest[2]) - since)
  end
  return wait
end

if left <= 0 or not stored then
  return {3, 0, retry_after()}
end

-- Both sides are HMAC-SHA-256 hex under the secret pepper; compare every byte anyway, without
-- an early exit, so the comparison's time does not depend on where they differ.
local candidate = ARGV[1]
local diff = (#stored == #candidate) and 0 or 1
for i = 1, #stored do
  diff = bit.bor(diff, bit.bxor(string.byte(stored, i), string.byte(candidate, i) or 0))
end
if diff == 0 then
  redis.call('DEL', KEYS[1])
  return {1, 0, 0}
end

left = left - 1
if left > 0 then
  redis.call('HSET', KEYS[1], 'attempts_left', left)
  return {2, left, 0}
end
-- Burned: forget the hash, keep the state (and its TTL) so later tries say "locked".
redis.call('HDEL', KEYS[1], 'hmac')
redis.call('HSET', KEYS[1], 'attempts_left', 0)
return {3, 0, retry_after()}
