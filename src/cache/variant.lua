-- Standards mode, Vary on any field. An answer with Vary is stored under a variant key, and
-- the target's own entry key holds a stub, 'cv\n' .. the sorted lower-case field names
-- joined by ','. The variant key is the entry key, '#v' and the SHA-1 of each named field
-- with the request's value ('name=+value', or 'name=-' when absent), one a line: it lives in
-- the entry's slot. Request fields arrive as ARGV pairs (name, value) from index `first`.
local function variant_key(names, first)
  local values = {}
  for i = first, #ARGV - 1, 2 do values[ARGV[i]] = ARGV[i + 1] end
  local parts = {}
  for name in string.gmatch(names, '[^,]+') do
    parts[#parts + 1] = values[name] and (name .. '=+' .. values[name]) or (name .. '=-')
  end
  return KEYS[1] .. '#v' .. redis.sha1hex(table.concat(parts, '\n'))
end
