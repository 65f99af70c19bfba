-- Gives a session a new id. KEYS[1] the old session, KEYS[2] the new one (same slot tag).
-- ARGV: idle_ms, old member, new member, grace ms. The old id's key becomes a forward record
-- to the new one for the grace period (requests already in flight with the old cookie still
-- work), listed in the index so revoking ends it too; 0 ends the old id at once.
-- Returns {0} when there is no such session, {3} if the new key exists, {5} when KEYS[1] is
-- itself a rotated-away id (it may only read: rotating through it would hand its holder the
-- session and log the rightful holder out), else {1, expiry, now, handle}: the handle is the
-- one the session was created with, which rotation keeps.
local function rotate()
  local now = now_ms
  local s, old_key, old_member = load_own(KEYS[1], ARGV[2], now)
  if not s then
    return old_key
  end
  local prefix = string.sub(old_key, 1, #old_key - #old_member)
  local new_key = prefix .. ARGV[3]
  if redis.call('EXISTS', new_key) == 1 then
    return {3}
  end
  -- Only one generation of forward record: the one before is ended now.
  if s.prev then
    redis.call('DEL', prefix .. s.prev)
    redis.call('ZREM', s.idx, s.prev)
  end
  redis.call('ZREM', s.idx, old_member)
  -- A record from before `h` was kept: pin its handle, or the new id would change it.
  s.h = handle_of(s, old_member)
  local grace = tonumber(ARGV[4])
  if grace > 0 then
    local until_ms = math.min(now + grace, s.abs)
    redis.call('SET', old_key, cjson.encode({fwd = ARGV[3], idx = s.idx}), 'PX', math.max(1, until_ms - now))
    s.prev = old_member
    save(new_key, s, ARGV[3], now, tonumber(ARGV[1]))
    redis.call('ZADD', s.idx, int(until_ms), old_member)
  else
    redis.call('DEL', old_key)
    s.prev = nil
    save(new_key, s, ARGV[3], now, tonumber(ARGV[1]))
  end
  return {1, s.exp, now, s.h}
end
