-- Check and consume a code in one step, so that of any number of concurrent verifies with the
-- right code exactly one succeeds, and wrong guesses are counted without loss: per code
-- (attempts_left), per lane across codes (the guard's consecutive failures and lockout), per
-- client (its failure budget). A link token is never guessed: a wrong one counts nothing and
-- touches nothing, as without a subject (verify_link.lua). After lanes.lua.
--
-- ARGV: 2 keyed hash of the submitted code (hex), 3 its format, 4 max issues per hour,
--       5 max consecutive failures, 6 first lockout ms, 7 longest lockout ms,
--       8 guard memory ms, 9 client failures per hour, 10 known-client lifetime ms
-- Returns {status, attempts_left, retry_after_ms}: 0 no active code, 1 verified (the code is
-- deleted), 2 wrong, 3 burned (until its TTL ends), 4 locked out, 5 client over its limit.
use_lane(ARGV[3])
local locked = locked_for()
if locked > 0 then
  return {4, 0, locked}
end
local client_budget
if client ~= '' then
  client_budget = budget(KEYS[3], tonumber(ARGV[9]))
  if not client_budget[1] then
    return {5, 0, client_budget[6]}
  end
end

local state = redis.call('HMGET', K_CODE, 'hmac', 'attempts_left', 'format')
local stored, left = state[1], tonumber(state[2])
-- Only a code answers a code and a link a link: a digit guess never spends a link's attempts.
if not left or state[3] ~= ARGV[3] then
  return {0, 0, 0}
end

-- When a new code may be issued: the cooldown, or the lane's issue budget's next token.
local function retry_after()
  local wait = math.max(0, redis.call('PTTL', K_COOLDOWN))
  return math.max(wait, budget(K_BUDGET, tonumber(ARGV[4]))[6])
end

if left <= 0 or not stored then
  return {3, 0, retry_after()}
end

-- Both sides are HMAC-SHA-256 hex under the secret pepper; compare every byte anyway, without
-- an early exit.
local candidate = ARGV[2]
local diff = (#stored == #candidate) and 0 or 1
for i = 1, #stored do
  diff = bit.bor(diff, bit.bxor(string.byte(stored, i), string.byte(candidate, i) or 0))
end
if diff == 0 then
  redis.call('DEL', K_CODE, K_GUARD)
  local known_ms = tonumber(ARGV[10])
  if client ~= '' and known_ms > 0 then
    redis.call('ZADD', KEYS[1], now + known_ms, client)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
    -- A handful of devices is plenty; the oldest are forgotten first.
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -17)
    redis.call('PEXPIRE', KEYS[1], known_ms)
  end
  return {1, 0, 0}
end

-- A wrong link token: nothing to count (256 bits are not guessed) and nothing to burn.
if ARGV[3] == 'link' then
  return {0, 0, 0}
end
-- A failure: counted for the client, and for the lane across codes.
if client_budget then
  client_budget[7]()
end
local fails = redis.call('HINCRBY', K_GUARD, 'fails', 1)
redis.call('PEXPIRE', K_GUARD, tonumber(ARGV[8]))
if fails >= tonumber(ARGV[5]) then
  -- Locked out: each lockout doubles the last, up to the longest; the count starts again.
  local level = redis.call('HINCRBY', K_GUARD, 'level', 1)
  local lock = math.min(tonumber(ARGV[6]) * 2 ^ (level - 1), tonumber(ARGV[7]))
  redis.call('HSET', K_GUARD, 'fails', 0, 'locked_until', string.format('%.0f', now + lock))
  redis.call('DEL', K_CODE)
  return {4, 0, lock}
end

left = left - 1
if left > 0 then
  redis.call('HSET', K_CODE, 'attempts_left', left)
  return {2, left, 0}
end
-- Burned: forget the hash, keep the state (and its TTL) so later tries say "burned".
redis.call('HDEL', K_CODE, 'hmac')
redis.call('HSET', K_CODE, 'attempts_left', 0)
return {3, 0, retry_after()}
