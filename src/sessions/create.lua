-- Creates a session. KEYS[1] the session, KEYS[2] the user's index (same slot).
-- ARGV: idle_ms, absolute_ms, max_per_user, session key prefix, member (session digest),
-- user id, user agent, data bytes, number of server-owned pairs, then data name/JSON value
-- pairs, the server-owned ones first.
-- Returns {1, expiry, now, sessions ended to stay under max_per_user} or {3} if the key
-- already exists (a 256-bit collision: never, in practice).
local function create()
  local key, idx = KEYS[1], KEYS[2]
  local now = now_ms
  if redis.call('EXISTS', key) == 1 then
    return {3}
  end

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

  local data, srv = {}, nil
  local server_pairs = tonumber(ARGV[9])
  for i = 10, #ARGV, 2 do
    data[ARGV[i]] = ARGV[i + 1]
    if (i - 10) / 2 < server_pairs then
      srv = srv or {}
      srv[ARGV[i]] = true
    end
  end
  local s = {uid = ARGV[6], idx = idx, created = now, abs = now + tonumber(ARGV[2]), ua = ARGV[7],
    dsize = tonumber(ARGV[8]), data = data, srv = srv, h = string.sub(ARGV[5], 1, 16)}
  save(key, s, ARGV[5], now, tonumber(ARGV[1]))
  return {1, s.exp, now, ended}
end
