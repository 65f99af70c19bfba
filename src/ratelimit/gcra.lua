-- The rate limiter's token bucket, as GCRA, shared by its decision script and by the scripts
-- of other services that limit inside their own round trip (OTP). Needs the CLOCK prelude.
-- The bucket is a string at `key` holding the theoretical arrival time (TAT, microseconds of
-- Redis TIME) at which it is full again; `capacity` tokens, one more every `interval` us.
-- Returns {allowed, tokens now, ms until full now, tokens after, ms until full after,
-- ms until `cost` fits (0 when allowed), take}: nothing is written until `take()` is called,
-- so a caller can check several limits and consume only when all of them admit.
local function gcra(key, interval, capacity, cost)
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
