-- Ends every session in a user's index (forward records of rotated ids too); the number of
-- sessions ended (forward records not counted).
local function end_all(idx, prefix)
  local members = redis.call('ZRANGE', idx, 0, -1)
  local ended = 0
  for i = 1, #members do
    -- Same slot as the index: every key of one user carries the user's tag.
    local k = prefix .. members[i]
    if kind(redis.pcall('GET', k)) ~= 'forward' then
      ended = ended + redis.call('DEL', k)
    else
      redis.call('DEL', k)
    end
  end
  redis.call('DEL', idx)
  return ended
end

-- Ends every session of the caller's user ("log out everywhere").
-- KEYS[1] the caller's session. ARGV: member, session key prefix.
-- Returns {0} when there is no such session, {5} for a rotated-away id, else
-- {1, sessions ended}.
local function revoke_all()
  local s, reply = load_own(KEYS[1], ARGV[1], now_ms)
  if not s then
    return reply
  end
  return {1, end_all(s.idx, ARGV[2])}
end

-- The backend ends sessions of a user by user id: all of them, or the one with a handle.
-- KEYS[1] the user's index. ARGV: session key prefix, handle ('' for all).
-- Returns {1, sessions ended}.
local function revoke_user()
  local idx, prefix, handle = KEYS[1], ARGV[1], ARGV[2]
  if handle == '' then
    return {1, end_all(idx, prefix)}
  end
  local now = now_ms
  local member = by_handle(idx, handle, now, prefix)
  if not member then
    return {1, 0}
  end
  local s, k, m = load(prefix .. member, member, now, true)
  redis.call('DEL', prefix .. member)
  redis.call('ZREM', idx, member)
  if s and s.prev then
    redis.call('DEL', prefix .. s.prev)
    redis.call('ZREM', idx, s.prev)
  end
  return {1, s and 1 or 0}
end
