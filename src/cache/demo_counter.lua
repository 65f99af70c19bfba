-- GET /api/cache/demo: INCR and the expiry in one atomic round trip.
-- KEYS[1] counter, ARGV[1] TTL seconds
local value = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return value
