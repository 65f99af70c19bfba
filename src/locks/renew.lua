-- Renews a lease: compare-and-set of its expiry. KEYS[1] the lock. ARGV: token hash, TTL ms.
-- Returns {1, fencing token, TTL}, or {0, ms left (-2: nobody holds it)} for anyone else.
local fence = held_by(ARGV[1])
if not fence then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, fence, tonumber(ARGV[2])}
