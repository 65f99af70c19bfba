-- Drain: give the bucket's lease back, if this drain still holds it.
-- KEYS[1] the bucket's drain lease; ARGV[1] this drain's lease token
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
