-- Issue a one-time code for one subject and purpose: cooldown, hourly cap, outbox entry and
-- stored state, atomically. Every key shares the subject's shard hash tag, so this runs as one
-- script on clustered Redis too.
--
-- KEYS[1] code state (hash: hmac, attempts_left, format, delivery)
-- KEYS[2] resend cooldown (string: the delivery id)
-- KEYS[3] issues in the last hour, per subject (sorted set: delivery id -> issue time ms)
-- KEYS[4] outbox stream of the subject's shard
-- ARGV: 1 keyed hash of the code (hex), 2 ttl ms, 3 cooldown ms, 4 max issues per hour,
--       5 max attempts, 6 format, 7 outbox MAXLEN, 8 outbox retention ms,
--       9 subject, 10 purpose, 11 channel, 12 the plain code (outbox entry only)
-- Returns {1, delivery id, expires_at_ms} or {0, "cooldown" | "hourly", retry_after_ms}.
local now = now_ms
local ttl = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local hour = 3600000

local cooldown_left = redis.call('PTTL', KEYS[2])
if cooldown_left > 0 then
  return {0, 'cooldown', cooldown_left}
end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - hour)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return {0, 'hourly', math.max(1, tonumber(oldest[2]) + hour - now)}
end

local expires_at = string.format('%.0f', now + ttl)
-- The outbox write comes first: if it fails (OOM, ...), nothing else has been written.
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*',
  'subject', ARGV[9], 'purpose', ARGV[10], 'channel', ARGV[11], 'format', ARGV[6],
  'code', ARGV[12], 'expires_at_ms', expires_at)
-- Entries older than the longest-lived code are worthless plain codes: drop them.
local retention = tonumber(ARGV[8])
redis.call('XTRIM', KEYS[4], 'MINID', string.format('%.0f', now - retention))
redis.call('PEXPIRE', KEYS[4], retention)

-- Replace any previous code: only its keyed hash is stored, never the code.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hmac', ARGV[1], 'attempts_left', ARGV[5], 'format', ARGV[6], 'delivery', id)
redis.call('PEXPIRE', KEYS[1], ttl)
if cooldown > 0 then
  redis.call('SET', KEYS[2], id, 'PX', cooldown)
end
redis.call('ZADD', KEYS[3], now, id)
redis.call('PEXPIRE', KEYS[3], hour)
return {1, id, expires_at}
