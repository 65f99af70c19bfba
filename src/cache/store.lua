-- After an origin fetch: store the entry (or not), release the lock if this request owns
-- it, count the outcome. One round trip; all keys in the entry's slot.
-- KEYS[1] entry, KEYS[2] lock, KEYS[3] outcome counter (hits, misses, stale or bypasses),
-- KEYS[4] origin_fetches counter, KEYS[5..] tag sets of this entry's bucket
-- ARGV[1] lock token ('' when this request holds no lock)
-- ARGV[2] 'store' or 'skip'
-- ARGV[3] stats TTL seconds
-- store only: ARGV[4] status, ARGV[5] content type, ARGV[6] body, ARGV[7] soft TTL ms,
--             ARGV[8] hard TTL ms (key expiry), ARGV[9] fetch cost ms
local now = now_ms

if ARGV[2] == 'store' then
  local hard = tonumber(ARGV[8])
  -- Entry value, format 1 (mod.rs parses the same): 'c1', status, stored ms, soft expiry
  -- ms (Redis TIME), fetch cost ms, content type, one per line, then the raw body.
  local header = string.format('c1\n%d\n%d\n%d\n%d\n', tonumber(ARGV[4]), now,
    now + tonumber(ARGV[7]), tonumber(ARGV[9]))
  local content_type = string.gsub(ARGV[5], '[\r\n]', '')
  redis.call('SET', KEYS[1], header .. content_type .. '\n' .. ARGV[6], 'PX', hard)
  for i = 5, #KEYS do
    redis.call('SADD', KEYS[i], KEYS[1])
    -- A tag set lives as long as its longest-lived entry.
    if redis.call('PTTL', KEYS[i]) < hard then redis.call('PEXPIRE', KEYS[i], hard) end
    -- Keep sets from collecting expired entries: check two members at random.
    for _, member in ipairs(redis.call('SRANDMEMBER', KEYS[i], 2)) do
      if redis.call('EXISTS', member) == 0 then redis.call('SREM', KEYS[i], member) end
    end
  end
end

if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
for i = 3, 4 do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
