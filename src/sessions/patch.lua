-- Merges into a session's data, atomically. KEYS[1] the session.
-- ARGV: idle_ms, member, max data bytes, then name/JSON value pairs; an empty value deletes
-- the name. Data size is the sum of name and value lengths, as at creation.
-- Returns {0} when there is no such session, {2, size} when the merged data would exceed
-- the cap (nothing written), else {1, JSON, now}.
local function patch()
  local key, member = KEYS[1], ARGV[2]
  local now = now_ms
  local s = load(key, member, now)
  if not s then
    return {0}
  end
  local data, size = s.data, s.dsize
  for i = 4, #ARGV, 2 do
    local name, value = ARGV[i], ARGV[i + 1]
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
  if size > tonumber(ARGV[3]) then
    return {2, size}
  end
  s.dsize = size
  return {1, save(key, s, member, now, tonumber(ARGV[1])), now}
end
