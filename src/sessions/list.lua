-- Lists the caller's user's sessions and slides the caller's idle timeout.
-- KEYS[1] the caller's session. ARGV: idle_ms, member, session key prefix.
-- Returns {0} when there is no such session, {5} for a rotated-away id, else {1, count, then
-- per session: is_current, created, seen, expiry, user agent, handle}, soonest expiry first.
-- Forward records of rotated ids are not listed.
local function list()
  local now = now_ms
  local s, key, member = load_own(KEYS[1], ARGV[2], now)
  if not s then
    return key
  end
  local prefix = ARGV[3]
  save(key, s, member, now, tonumber(ARGV[1]))
  local entries = redis.call('ZRANGE', s.idx, 0, -1, 'WITHSCORES')
  local out = {1, 0}
  for i = 1, #entries, 2 do
    local m = entries[i]
    -- Same slot as KEYS[1] (the index holds one user's sessions under one tag).
    local o
    if m == member then
      o = s
    elseif kind(redis.pcall('GET', prefix .. m)) ~= 'forward' then
      o = load(prefix .. m, m, now, true)
      if not o then
        -- The session key is gone although its entry is live (evicted under maxmemory).
        redis.call('ZREM', s.idx, m)
      end
    end
    if o then
      out[#out + 1] = (m == member) and 1 or 0
      out[#out + 1] = o.created
      out[#out + 1] = o.seen
      out[#out + 1] = tonumber(entries[i + 1])
      out[#out + 1] = o.ua
      out[#out + 1] = handle_of(o, m)
      out[2] = out[2] + 1
    end
  end
  return out
end
