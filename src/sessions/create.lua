-- Creates a session. KEYS[1] the session, KEYS[2] the user's index (same slot).
-- ARGV: idle_ms, absolute_ms, max_per_user, session key prefix, member (session digest),
-- user id, user agent, data bytes, then data name/JSON value pairs.
-- Returns {1, expiry, now, sessions ended to stay under max_per_user} or {3} if the key
-- already exists (a 256-bit collision: never, in practice).
local function create()
  local key, idx, member = KEYS[1], KEYS[2], ARGV[5]
  local now = now_ms()
  if redis.call('EXISTS', key) == 1 then
    return {3}
  end
  local abs = now + tonumber(ARGV[2])

  -- Stay within max_per_user: end the sessions closest to expiring (the least recently used).
  -- Their keys are not in KEYS, but share this script's hash slot, which Redis Cluster allows.
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', int(now))
  local excess = redis.call('ZCARD', idx) - tonumber(ARGV[3]) + 1
  local ended = 0
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', idx, excess)
    for i = 1, #oldest, 2 do
      ended = ended + redis.call('DEL', ARGV[4] .. oldest[i])
    end
  end

  redis.call('HSET', key, 'uid', ARGV[6], 'idx', idx, 'created', int(now), 'seen', int(now),
    'abs', int(abs), 'ua', ARGV[7], 'dsize', ARGV[8])
  for i = 9, #ARGV, 2 do
    redis.call('HSET', key, 'd:' .. ARGV[i], ARGV[i + 1])
  end
  local expiry = touch(key, idx, member, now, tonumber(ARGV[1]), abs)
  return {1, expiry, now, ended}
end
