-- Ends every session of the caller's user ("log out everywhere").
-- KEYS[1] the caller's session. ARGV: member, session key prefix.
-- Returns {0} when there is no such session, else {1, sessions ended}.
local function revoke_all()
  local key, member, prefix = KEYS[1], ARGV[1], ARGV[2]
  local s = load(key, member, now_ms)
  if not s then
    return {0}
  end
  local members = redis.call('ZRANGE', s.idx, 0, -1)
  local ended = 0
  for i = 1, #members do
    -- Same slot as KEYS[1]: every key of one user carries the user's tag.
    ended = ended + redis.call('DEL', prefix .. members[i])
  end
  redis.call('DEL', s.idx)
  return {1, ended}
end
