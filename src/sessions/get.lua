-- Reads a session and slides its idle timeout. KEYS[1] the session.
-- ARGV: idle_ms, member. Returns {0} when there is no such session, else the view.
local function get()
  local key, member = KEYS[1], ARGV[2]
  local now = now_ms()
  local idx, abs = load_session(key, member, now)
  if not idx then
    return {0}
  end
  local expiry = touch(key, idx, member, now, tonumber(ARGV[1]), abs)
  return view(key, expiry, now)
end
