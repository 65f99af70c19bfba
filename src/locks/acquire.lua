-- Acquires a lease. KEYS[1] the lock, KEYS[2] its fencing counter (same slot). ARGV: SHA-256
-- (hex) of the holder's token, TTL in ms, how long the counter outlives the lease in ms.
-- Returns {1, fencing token, TTL} or, when held, {0, ms left (-1: the key has no expiry)}.
--
-- The lock holds `<fencing token> <token hash>` and expires with the lease. Each fencing
-- token is the larger of (last + 1) and Redis TIME in us, so it grows across holders even if
-- a failover loses both the lock and the last increment (they are in one script, so a replica
-- has both or neither): the next token still beats every token issued before, unless the new
-- primary's clock is behind the old one's by more than the time since that token was issued.
-- Integers stay exact in a double until 2^53 (year 2255).
--
-- The counter expires too (names are not reclaimed otherwise), and the same floor makes that
-- safe: it is kept for the lease, plus ARGV[3], plus however far the counter has run ahead of
-- the clock (only bursts of more than one acquisition per us could do that). Once it has
-- expired, TIME is past every token it ever held, so a restart from TIME still grows.
local left = redis.call('PTTL', KEYS[1])
if left ~= -2 then
  return {0, left}
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local next_fence = math.max(last + 1, now_us)
local fence = string.format('%.0f', next_fence)
local ahead_ms = math.ceil((next_fence - now_us) / 1000)
local keep_ms = tonumber(ARGV[2]) + tonumber(ARGV[3]) + ahead_ms
redis.call('SET', KEYS[2], fence, 'PX', string.format('%.0f', keep_ms))
redis.call('SET', KEYS[1], fence .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {1, fence, tonumber(ARGV[2])}
