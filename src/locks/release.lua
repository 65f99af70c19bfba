-- Releases a lease: compare-and-delete. KEYS[1] the lock. ARGV: token hash.
-- Returns {1, fencing token}, or {0, ms left (-2: nobody holds it)} for anyone else.
local fence = held_by(ARGV[1])
if not fence then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('DEL', KEYS[1])
return {1, fence}
