-- Every limit of one decision, checked and then consumed together, so a refusal by any limit
-- consumes nothing from the others. One state key per limit, all in one hash slot.
-- KEYS[i]: the state of limit i; ARGV: cost, mode ("consume" | "dry" | "peek"), the number
-- of limits n, then four per limit: algorithm ("fw" | "sw" | "tb"), window_ms or
-- interval_us, quota, offset_ms. KEYS[n + 1], when given, is a token bucket's blocked-until
-- marker: a consuming refusal writes "<until ms> <cost> <remaining> <reset at ms>" there
-- (Redis time), expiring when
-- the wait does, so the component can serve later refusals from the pooled store.
-- Returns four integers per limit: allowed 0|1, remaining, reset_after_ms, retry_after_ms.
-- When any limit refuses, every limit reports its state without this request.
-- Each check returns {allowed, remaining now, reset now, remaining after, reset after,
-- retry, write}. Clock: Redis TIME (the CLOCK prelude).
local cost = tonumber(ARGV[1])
local mode = ARGV[2]
local n = tonumber(ARGV[3])

-- Fixed window: hash w = window number, c = units used in it. Windows start at a per-key
-- offset, so refused clients of different keys do not all retry at the same instant.
local function fixed(key, window_ms, limit, offset_ms)
  local window = window_ms * 1000
  local shifted = now_us - offset_ms * 1000
  local idx = math.floor(shifted / window)
  local used = 0
  local s = redis.call('HMGET', key, 'w', 'c')
  if tonumber(s[1]) == idx then used = tonumber(s[2]) or 0 end
  local reset = math.ceil(((idx + 1) * window - shifted) / 1000)
  if used + cost > limit then
    local left = math.max(limit - used, 0)
    return {false, left, reset, left, reset, reset}
  end
  local now_reset = 0
  if used > 0 then now_reset = reset end
  return {true, limit - used, now_reset, limit - used - cost, reset, 0, function()
    redis.call('HSET', key, 'w', idx, 'c', used + cost)
    redis.call('PEXPIRE', key, reset)
  end}
end

-- Sliding window over two fixed windows: w = current window, c = units in it, p = units in
-- the window before, weighted by its share still inside the sliding window.
local function sliding(key, window_ms, limit)
  local window = window_ms * 1000
  local idx = math.floor(now_us / window)
  local cur, prev = 0, 0
  local s = redis.call('HMGET', key, 'w', 'c', 'p')
  local w = tonumber(s[1])
  if w == idx then
    cur = tonumber(s[2]) or 0
    prev = tonumber(s[3]) or 0
  elseif w == idx - 1 then
    prev = tonumber(s[2]) or 0
  end
  local elapsed = now_us - idx * window
  local weighted = prev * (window - elapsed) / window
  local function remaining(c)
    local r = math.floor(limit - weighted - c)
    if r < 0 then r = 0 end
    return r
  end
  -- Time until the estimate is back to zero (the quota fully restored).
  local function reset(c)
    if c > 0 then return math.ceil(((idx + 2) * window - now_us) / 1000) end
    if prev > 0 then return math.ceil(((idx + 1) * window - now_us) / 1000) end
    return 0
  end
  if weighted + cur + cost > limit then
    local wait
    if cur + cost <= limit then
      -- Later in this window, once the previous window's weight has decayed enough.
      wait = window * (1 - (limit - cur - cost) / prev) - elapsed
    else
      -- In the next window, where this window's count becomes the decaying one.
      wait = (window - elapsed) + window * (1 - (limit - cost) / cur)
    end
    return {false, remaining(cur), reset(cur), remaining(cur), reset(cur),
      math.max(math.ceil(wait / 1000), 1)}
  end
  return {true, remaining(cur), reset(cur), remaining(cur + cost), reset(cur + cost), 0,
    function()
      redis.call('HSET', key, 'w', idx, 'c', cur + cost, 'p', prev)
      redis.call('PEXPIRE', key, math.ceil(((idx + 2) * window - now_us) / 1000))
    end}
end

-- Token bucket as GCRA: a string holding the theoretical arrival time (TAT, microseconds)
-- at which the bucket is full again.
local function bucket(key, interval, capacity)
  local burst = capacity * interval
  local stored = redis.call('GET', key)
  local tat = stored and tonumber(stored) or now_us
  if tat < now_us then tat = now_us end
  local function tokens(at)
    local n = math.floor((now_us - (at - burst)) / interval)
    if n < 0 then n = 0 end
    if n > capacity then n = capacity end
    return n
  end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst
  local reset = math.ceil((tat - now_us) / 1000)
  if allow_at > now_us then
    return {false, tokens(tat), reset, tokens(tat), reset, math.ceil((allow_at - now_us) / 1000)}
  end
  local ttl = math.ceil((new_tat - now_us) / 1000)
  return {true, tokens(tat), reset, tokens(new_tat), ttl, 0, function()
    redis.call('SET', key, string.format('%d', new_tat), 'PX', ttl)
  end}
end

local checks, all = {}, true
for i = 1, n do
  local key = KEYS[i]
  local a = 3 + (i - 1) * 4
  local alg, param = ARGV[a + 1], tonumber(ARGV[a + 2])
  local quota, offset = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local r
  if alg == 'fw' then
    r = fixed(key, param, quota, offset)
  elseif alg == 'sw' then
    r = sliding(key, param, quota)
  else
    r = bucket(key, param, quota)
  end
  checks[i] = r
  if not r[1] then all = false end
end
local after = all and mode ~= 'peek'
local out = {}
for _, r in ipairs(checks) do
  if all and mode == 'consume' then r[7]() end
  out[#out + 1] = r[1] and 1 or 0
  if after then
    out[#out + 1] = r[4]
    out[#out + 1] = r[5]
  else
    out[#out + 1] = r[2]
    out[#out + 1] = r[3]
  end
  out[#out + 1] = r[6]
end
local marker = KEYS[n + 1]
if marker and not all and mode == 'consume' and checks[1][6] > 0 then
  local wait = checks[1][6]
  local r = checks[1]
  local text = string.format('%d %d %d %d', now_ms + wait, cost, r[2], now_ms + r[3])
  redis.call('SET', marker, text, 'PX', wait)
end
return out
