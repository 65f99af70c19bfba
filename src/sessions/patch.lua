-- Merges into a session's data, atomically. KEYS[1] the session.
-- ARGV: idle_ms, member, max data bytes, then name/JSON value pairs; an empty value deletes
-- the name. Data size is the sum of name and value lengths, as at creation.
-- Returns {0} when there is no such session, {2, size} when the merged data would exceed
-- the cap (nothing written), else the view.
local function patch()
  local key, member = KEYS[1], ARGV[2]
  local now = now_ms()
  local idx, abs = load_session(key, member, now)
  if not idx then
    return {0}
  end
  local size = tonumber(redis.call('HGET', key, 'dsize') or '0')
  for i = 4, #ARGV, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
    local old = redis.call('HSTRLEN', key, 'd:' .. name)
    if old > 0 then
      size = size - old - #name
    end
    if value ~= '' then
      size = size + #value + #name
    end
  end
  if size > tonumber(ARGV[3]) then
    return {2, size}
  end
  for i = 4, #ARGV, 2 do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', key, 'd:' .. ARGV[i])
    else
      redis.call('HSET', key, 'd:' .. ARGV[i], ARGV[i + 1])
    end
  end
  redis.call('HSET', key, 'dsize', int(size))
  local expiry = touch(key, idx, member, now, tonumber(ARGV[1]), abs)
  return view(key, expiry, now)
end
