-- Renews a lease: compare-and-set of its expiry. KEYS[1] the lock, KEYS[2] its fencing
-- counter. ARGV: token hash, TTL ms, how long the counter outlives the lease in ms.
-- Returns {1, fencing token, TTL}, or {0, ms left (-2: nobody holds it)} for anyone else.
local fence = held_by(ARGV[1])
if not fence then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
-- The counter keeps outliving the lease (never shortened: it may be ahead of the clock).
local keep_ms = tonumber(ARGV[2]) + tonumber(ARGV[3])
if redis.call('PTTL', KEYS[2]) < keep_ms then
  redis.call('PEXPIRE', KEYS[2], keep_ms)
end
return {1, fence, tonumber(ARGV[2])}
