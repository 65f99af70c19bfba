-- A lock's state, without its holder's token. KEYS[1] the lock, KEYS[2] its counter.
-- Returns {ms left (-2: free, -1: no expiry), the holder's fencing token or '', the last
-- fencing token issued or ''}.
local value = redis.call('GET', KEYS[1])
local fence = ''
if value then
  fence = string.match(value, '^(%d+) ') or ''
end
return {redis.call('PTTL', KEYS[1]), fence, redis.call('GET', KEYS[2]) or ''}
