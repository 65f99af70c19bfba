-- Reads a session and slides its idle timeout. KEYS[1] the session.
-- ARGV: idle_ms, member. Returns {0} when there is no such session, else {1, JSON, now}.
-- A rotated-away id (during the grace) reads the session but does not slide it.
local function get()
  local key, member = KEYS[1], ARGV[2]
  local now = now_ms
  local s, k, m, forwarded = load(key, member, now)
  if not s then
    return {0}
  end
  if forwarded then
    return {1, cjson.encode(s), now}
  end
  return {1, save(k, s, m, now, tonumber(ARGV[1])), now}
end
