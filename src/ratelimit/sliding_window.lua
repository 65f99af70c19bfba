-- Sliding window, weighted over two fixed windows: the previous window's count weighs by
-- the share of it still inside the sliding window. One hash per (policy, key):
-- w = current window number, c = units in it, p = units in the window before.
-- KEYS[1] the hash. ARGV: window_ms, limit, cost, mode ("consume" | "dry" | "peek").
-- Returns {allowed 0|1, remaining, reset_after_ms, retry_after_ms}. Clock: Redis TIME.
local now = now_us
local window = tonumber(ARGV[1]) * 1000
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[4]

local idx = math.floor(now / window)
local cur, prev = 0, 0
local s = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(s[1])
if w == idx then
  cur = tonumber(s[2]) or 0
  prev = tonumber(s[3]) or 0
elseif w == idx - 1 then
  prev = tonumber(s[2]) or 0
end
local elapsed = now - idx * window
local weighted_prev = prev * (window - elapsed) / window

local function remaining(c)
  local r = math.floor(limit - weighted_prev - c)
  if r < 0 then r = 0 end
  return r
end
-- Time until the estimate is back to zero (the quota fully restored).
local function reset(c)
  if c > 0 then return math.ceil(((idx + 2) * window - now) / 1000) end
  if prev > 0 then return math.ceil(((idx + 1) * window - now) / 1000) end
  return 0
end

if weighted_prev + cur + cost > limit then
  local wait
  if cur + cost <= limit then
    -- Later in this window, once the previous window's weight has decayed enough.
    wait = window * (1 - (limit - cur - cost) / prev) - elapsed
  else
    -- In the next window, where this window's count becomes the decaying one.
    wait = (window - elapsed) + window * (1 - (limit - cost) / cur)
  end
  return {0, remaining(cur), reset(cur), math.max(math.ceil(wait / 1000), 1)}
end
if mode == 'peek' then
  return {1, remaining(cur), reset(cur), 0}
end
if mode == 'consume' then
  redis.call('HSET', KEYS[1], 'w', idx, 'c', cur + cost, 'p', prev)
  redis.call('PEXPIRE', KEYS[1], math.ceil(((idx + 2) * window - now) / 1000))
end
return {1, remaining(cur + cost), reset(cur + cost), 0}
