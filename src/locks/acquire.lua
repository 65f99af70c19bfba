-- Acquires a lease. KEYS[1] the lock, KEYS[2] its fencing counter (same slot). ARGV: SHA-256
-- (hex) of the holder's token, TTL in ms.
-- Returns {1, fencing token, TTL} or, when held, {0, ms left (-1: the key has no expiry)}.
--
-- The lock holds `<fencing token> <token hash>` and expires with the lease. The counter never
-- expires. Each fencing token is the larger of (last + 1) and Redis TIME in us, so it grows
-- across holders even if a failover loses both the lock and the last increment (they are in
-- one script, so a replica has both or neither): the next token still beats every token
-- issued before, unless the new primary's clock is behind the old one's by more than the
-- time since that token was issued. Integers stay exact in a double until 2^53 (year 2255).
local left = redis.call('PTTL', KEYS[1])
if left ~= -2 then
  return {0, left}
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local fence = string.format('%.0f', math.max(last + 1, now_us))
redis.call('SET', KEYS[2], fence)
redis.call('SET', KEYS[1], fence .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {1, fence, tonumber(ARGV[2])}
