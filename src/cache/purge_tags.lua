-- Purge one bucket's entries for some tags. KEYS[1] the bucket's purged counter, KEYS[2..]
-- the bucket's tag sets (all in the bucket's slot; the members are entry keys of that slot
-- too). ARGV[1] stats TTL seconds. Returns the number of entries deleted.
local n = 0
for i = 2, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  -- unpack() has a stack limit: delete in chunks.
  for j = 1, #members, 500 do
    n = n + redis.call('DEL', unpack(members, j, math.min(j + 499, #members)))
  end
  redis.call('DEL', KEYS[i])
end
if n > 0 then
  redis.call('INCRBY', KEYS[1], n)
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return n
