-- Lists the caller's user's sessions and slides the caller's idle timeout.
-- KEYS[1] the caller's session. ARGV: idle_ms, member, session key prefix.
-- Returns {0} when there is no such session, else {1, count, then per session:
-- is_current, created, seen, expiry, user agent}, soonest expiry first.
local function list()
  local key, member, prefix = KEYS[1], ARGV[2], ARGV[3]
  local now = now_ms()
  local idx, abs = load_session(key, member, now)
  if not idx then
    return {0}
  end
  touch(key, idx, member, now, tonumber(ARGV[1]), abs)
  local entries = redis.call('ZRANGE', idx, 0, -1, 'WITHSCORES')
  local out = {1, 0}
  for i = 1, #entries, 2 do
    local m = entries[i]
    -- Same slot as KEYS[1] (the index holds one user's sessions under one tag).
    local f = redis.call('HMGET', prefix .. m, 'created', 'seen', 'ua')
    if f[1] then
      out[#out + 1] = (m == member) and 1 or 0
      out[#out + 1] = tonumber(f[1])
      out[#out + 1] = tonumber(f[2])
      out[#out + 1] = tonumber(entries[i + 1])
      out[#out + 1] = f[3] or ''
      out[2] = out[2] + 1
    else
      -- The session key is gone although its entry is live (evicted under maxmemory).
      redis.call('ZREM', idx, m)
    end
  end
  return out
end
