-- DELETE one entry and announce it. KEYS[1] entry, KEYS[2] purged counter (same slot).
-- ARGV[1] channel, ARGV[2] the normalised path (for the event), ARGV[3] stats TTL seconds
local n = redis.call('DEL', KEYS[1])
if n > 0 then
  redis.call('INCRBY', KEYS[2], n)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'purge', path = ARGV[2], purged = n}))
return n
