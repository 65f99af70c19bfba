-- After an origin fetch: store the entry (or not), release the lock if this request owns
-- it, count the outcome. One round trip; all keys in the entry's slot.
-- KEYS[1] entry, KEYS[2] lock, KEYS[3] stats, KEYS[4..] tag sets of this entry's bucket
-- ARGV[1] lock token ('' when this request holds no lock)
-- ARGV[2] 'store' or 'skip'
-- ARGV[3] stats field to count ('' for none), ARGV[4] '1' if the origin was fetched
-- ARGV[5] stats TTL seconds
-- store only: ARGV[6] status, ARGV[7] content type, ARGV[8] body, ARGV[9] soft TTL ms,
--             ARGV[10] hard TTL ms (key expiry), ARGV[11] fetch cost ms, ARGV[12] tags
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if ARGV[2] == 'store' then
  local hard = tonumber(ARGV[10])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'status', ARGV[6], 'type', ARGV[7], 'body', ARGV[8],
    'stored', now, 'soft', now + tonumber(ARGV[9]), 'cost', ARGV[11], 'tags', ARGV[12])
  redis.call('PEXPIRE', KEYS[1], hard)
  for i = 4, #KEYS do
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
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[3], 1) end
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[3], 'origin_fetches', 1) end
redis.call('EXPIRE', KEYS[3], ARGV[5])
return 1
