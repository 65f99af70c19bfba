-- Ends one session (and the forward record of its previous id, if any). KEYS[1] the session.
-- ARGV: member. Returns {1} when a session was ended, {0} when there was none, {5} for a
-- rotated-away id (which ends nothing: it must not log the new id out).
local function logout()
  local key, member = KEYS[1], ARGV[1]
  local s, k, m = load_own(key, member, now_ms)
  if not s then
    return k
  end
  local prefix = string.sub(k, 1, #k - #m)
  redis.call('DEL', k)
  redis.call('ZREM', s.idx, m)
  if s.prev then
    redis.call('DEL', prefix .. s.prev)
    redis.call('ZREM', s.idx, s.prev)
  end
  return {1}
end
