-- Reads a session and slides its idle timeout. KEYS[1] the session.
-- ARGV: idle_ms, member. Returns {0} when there is no such session, else {1, JSON, now}.
local function get()
  local key, member = KEYS[1], ARGV[2]
  local now = now_ms
  local s, k, m = load(key, member, now)
  if not s then
    return {0}
  end
  return {1, save(k, s, m, now, tonumber(ARGV[1])), now}
end
