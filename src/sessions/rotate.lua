-- Gives a session a new id and ends the old one. KEYS[1] the old session, KEYS[2] the new
-- one (same slot tag). ARGV: idle_ms, old member, new member.
-- Returns {0} when there is no such session, {3} if the new key exists, else {1, expiry, now}.
local function rotate()
  local old_key, new_key = KEYS[1], KEYS[2]
  local now = now_ms
  local s = load(old_key, ARGV[2], now)
  if not s then
    return {0}
  end
  if redis.call('EXISTS', new_key) == 1 then
    return {3}
  end
  redis.call('DEL', old_key)
  redis.call('ZREM', s.idx, ARGV[2])
  save(new_key, s, ARGV[3], now, tonumber(ARGV[1]))
  return {1, s.exp, now}
end
