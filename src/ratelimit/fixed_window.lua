-- Fixed window: one hash per (policy, key): w = window number, c = units used in it.
-- KEYS[1] the hash. ARGV: window_ms, limit, cost, mode ("consume" | "dry" | "peek").
-- Returns {allowed 0|1, remaining, reset_after_ms, retry_after_ms}. Clock: Redis TIME.
local now = now_us
local window = tonumber(ARGV[1]) * 1000
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[4]

local idx = math.floor(now / window)
local used = 0
local s = redis.call('HMGET', KEYS[1], 'w', 'c')
if tonumber(s[1]) == idx then used = tonumber(s[2]) or 0 end

local reset = math.ceil(((idx + 1) * window - now) / 1000)
local allowed = used + cost <= limit
if not allowed then
  return {0, math.max(limit - used, 0), reset, reset}
end
if mode == 'peek' then
  return {1, limit - used, used > 0 and reset or 0, 0}
end
if mode == 'consume' then
  redis.call('HSET', KEYS[1], 'w', idx, 'c', used + cost)
  redis.call('PEXPIRE', KEYS[1], reset)
end
return {1, limit - used - cost, reset, 0}
