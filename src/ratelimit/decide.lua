-- Every limit of one decision, checked and then consumed together, so a refusal by any limit
-- consumes nothing from the others. All keys of a decision are in one hash slot.
-- KEYS[i], i <= n: the state of limit i: a token bucket's state key, or the counter of a
-- window limit's current window. Then one key per window limit, in order: the counter of its
-- previous window. Then, when given, a token bucket's blocked-until marker: a consuming
-- refusal writes "<until ms> <cost> <remaining> <reset at ms>" there
-- (Redis time), expiring when
-- the wait does, so the component can serve later refusals from the pooled store.
-- ARGV: cost, mode ("consume" | "dry" | "peek"), the number of limits n, then four per
-- limit: algorithm ("fw" | "sw" | "tb"), window_ms or interval_us, quota, and for a window
-- limit the ms elapsed in its current window (0 for a bucket).
-- Returns four integers per limit: allowed 0|1, remaining, reset_after_ms, retry_after_ms.
-- When any limit refuses, every limit reports its state without this request.
-- Each check returns {allowed, remaining now, reset now, remaining after, reset after,
-- retry, write}.
-- Clocks: windows are the component's (src/ratelimit/windows.rs): it names the window
-- counters and passes the elapsed time from its wall clock, the clock the pooled path
-- (pooled.rs) decides by, so both paths count in the same counters. Token buckets use
-- Redis TIME (the CLOCK prelude).
local cost = tonumber(ARGV[1])
local mode = ARGV[2]
local n = tonumber(ARGV[3])

-- A window counter (string) holds the units admitted in its window. An admitted request adds
-- its cost; the one that creates the counter gives it its expiry and gives the previous
-- window's counter one if it has none (PTTL -1), as pooled.rs does (windows.rs).
-- A counter is read before anything is written, so one that is not a whole number (or not a
-- string: WRONGTYPE) stops the decision with an error before any limit is consumed.
local function counter(key)
  local v = redis.call('GET', key)
  if not v then return 0 end
  local c = tonumber(v)
  if not c or c ~= math.floor(c) then
    error('window counter ' .. key .. ' holds ' .. v .. ', not a whole number')
  end
  return c
end

local function count(key, prev_key, ttl, prev_ttl)
  return function()
    if redis.call('INCRBY', key, cost) == cost then
      redis.call('PEXPIRE', key, ttl)
      if redis.call('PTTL', prev_key) == -1 then
        redis.call('PEXPIRE', prev_key, prev_ttl)
      end
    end
  end
end

-- Fixed window (its start shifted by a per-key offset, applied by the component).
local function fixed(key, prev_key, window_ms, limit, elapsed)
  local used = counter(key)
  local left = window_ms - elapsed
  if used + cost > limit then
    local rest = math.max(limit - used, 0)
    return {false, rest, left, rest, left, left}
  end
  local now_reset = 0
  if used > 0 then now_reset = left end
  return {true, limit - used, now_reset, limit - used - cost, left, 0,
    count(key, prev_key, left, 1)}
end

-- Sliding window over two fixed windows: the previous window's units are weighted by its
-- share still inside the sliding window. The formulas and their order of floating-point
-- operations are pooled.rs's, so both paths report the same figures.
local function sliding(key, prev_key, window_ms, limit, elapsed)
  local cur = counter(key)
  local prev = counter(prev_key)
  local left = window_ms - elapsed
  local weighted = prev * left / window_ms
  local function remaining(c)
    local r = math.floor(limit - weighted - c)
    if r < 0 then r = 0 end
    return r
  end
  -- Time until the estimate is back to zero (the quota fully restored).
  local function reset(c)
    if c > 0 then return left + window_ms end
    if prev > 0 then return left end
    return 0
  end
  if weighted + (cur + cost) > limit then
    local wait
    if cur + cost <= limit and prev > 0 then
      -- Later in this window, once the previous window's weight has decayed enough.
      wait = window_ms * (1 - (limit - cur - cost) / prev) - elapsed
    else
      -- In the next window, where this window's count becomes the decaying one.
      wait = left + window_ms * (1 - (limit - cost) / math.max(cur, 1))
    end
    return {false, remaining(cur), reset(cur), remaining(cur), reset(cur),
      math.max(math.ceil(wait), 1)}
  end
  return {true, remaining(cur), reset(cur), remaining(cur + cost), reset(cur + cost), 0,
    count(key, prev_key, left + window_ms, left)}
end

-- Token buckets: gcra() (gcra.lua, loaded before this script).

local checks, all = {}, true
-- Window limits so far: the previous-window counter of the w-th one is KEYS[n + w].
local w = 0
for i = 1, n do
  local key = KEYS[i]
  local a = 3 + (i - 1) * 4
  local alg, param = ARGV[a + 1], tonumber(ARGV[a + 2])
  local quota, elapsed = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local r
  if alg == 'fw' then
    w = w + 1
    r = fixed(key, KEYS[n + w], param, quota, elapsed)
  elseif alg == 'sw' then
    w = w + 1
    r = sliding(key, KEYS[n + w], param, quota, elapsed)
  else
    r = gcra(key, param, quota, cost)
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
local marker = KEYS[n + w + 1]
if marker and not all and mode == 'consume' and checks[1][6] > 0 then
  local wait = checks[1][6]
  local r = checks[1]
  local text = string.format('%d %d %d %d', now_ms + wait, cost, r[2], now_ms + r[3])
  redis.call('SET', marker, text, 'PX', wait)
end
return out
