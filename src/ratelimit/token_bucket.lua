-- Token bucket as GCRA: one string per (policy, key) holding the theoretical arrival time
-- (TAT, microseconds of Redis TIME) at which the bucket is full again.
-- KEYS[1] the string. ARGV: interval_us (time to refill one token), capacity, cost,
-- mode ("consume" | "dry" | "peek").
-- Returns {allowed 0|1, remaining, reset_after_ms, retry_after_ms}. Clock: Redis TIME.
local now = now_us
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local mode = ARGV[4]
local burst = capacity * interval

local stored = redis.call('GET', KEYS[1])
local tat = stored and tonumber(stored) or now
if tat < now then tat = now end

local function tokens(at)
  local n = math.floor((now - (at - burst)) / interval)
  if n < 0 then n = 0 end
  if n > capacity then n = capacity end
  return n
end

local new_tat = tat + cost * interval
local allow_at = new_tat - burst
if allow_at > now then
  return {0, tokens(tat), math.ceil((tat - now) / 1000), math.ceil((allow_at - now) / 1000)}
end
if mode == 'peek' then
  return {1, tokens(tat), math.ceil((tat - now) / 1000), 0}
end
local ttl = math.ceil((new_tat - now) / 1000)
if mode == 'consume' then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl)
end
return {1, tokens(new_tat), ttl, 0}
