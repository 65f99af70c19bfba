-- Prelude of renew and release: the lock's holder check, a compare in the same script as the
-- change it guards. KEYS[1] the lock; `hash` the SHA-256 (hex) of the caller's token.
-- Returns the fencing token when the caller holds the lock, else nil.
local function held_by(hash)
  local value = redis.call('GET', KEYS[1])
  if not value then
    return nil
  end
  local space = string.find(value, ' ', 1, true)
  if space and string.sub(value, space + 1) == hash then
    return string.sub(value, 1, space - 1)
  end
  return nil
end
