-- Merges into a session's data, atomically. KEYS[1] the session.
-- ARGV: idle_ms, member, max data bytes, then name/JSON value pairs; an empty value deletes
-- the name. Data size is the sum of name and value lengths, as at creation.
-- Names the backend set (s.srv) are read-only here.
-- Returns {0} when there is no such session, {2, size} when the merged data would exceed
-- the cap, {4, name} when a name is server-owned (nothing written either way), else
-- {1, JSON, now}; {5} for a rotated-away id.
local function merge(s, first, server)
  local data, size = s.data, s.dsize
  s.srv = s.srv or {}
  for i = first, #ARGV, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
    if server then
      s.srv[name] = (value ~= '') or nil
    end
    if data[name] then
      size = size - #data[name] - #name
    end
    if value == '' then
      data[name] = nil
    else
      data[name] = value
      size = size + #value + #name
    end
  end
  if next(s.srv) == nil then
    s.srv = nil
  end
  return size
end

local function patch()
  local key, member = KEYS[1], ARGV[2]
  local now = now_ms
  local s, k, m = load_own(key, member, now)
  if not s then
    return k
  end
  for i = 4, #ARGV, 2 do
    if s.srv and s.srv[ARGV[i]] then
      return {4, ARGV[i]}
    end
  end
  local size = merge(s, 4, false)
  if size > tonumber(ARGV[3]) then
    return {2, size}
  end
  s.dsize = size
  return {1, save(k, s, m, now, tonumber(ARGV[1])), now}
end

-- The backend sets server-owned data of one listed session, without sliding it.
-- KEYS[1] the user's index. ARGV: handle, session key prefix, max data bytes, then
-- name/JSON value pairs (empty: delete). Returns {0} when there is no such session,
-- {2, size} over the cap, else {1}.
local function server_patch()
  local idx = KEYS[1]
  local now = now_ms
  local member = by_handle(idx, ARGV[1], now, ARGV[2])
  if not member then
    return {0}
  end
  local key = ARGV[2] .. member
  local s = load(key, member, now, true)
  if not s then
    return {0}
  end
  local size = merge(s, 4, true)
  if size > tonumber(ARGV[3]) then
    return {2, size}
  end
  s.dsize = size
  redis.call('SET', key, cjson.encode(s), 'KEEPTTL')
  return {1}
end
