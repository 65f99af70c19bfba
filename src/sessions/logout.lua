-- Ends one session. KEYS[1] the session. ARGV: member.
-- Returns {1} when a session was ended, {0} when there was none.
local function logout()
  local key, member = KEYS[1], ARGV[1]
  local s = load(key, member, now_ms)
  if not s then
    return {0}
  end
  redis.call('DEL', key)
  redis.call('ZREM', s.idx, member)
  return {1}
end
