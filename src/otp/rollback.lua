-- Undo one issue whose webhook delivery failed, so the user is not left with a code they can
-- never receive and a cooldown that stops them asking again. Only what that issue wrote is
-- removed: a newer issue (another delivery id) is left alone.
--
-- KEYS as issue.lua; ARGV[1] the delivery id issue.lua returned.
local id = ARGV[1]
if redis.call('HGET', KEYS[1], 'delivery') == id then
  redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[2]) == id then
  redis.call('DEL', KEYS[2])
end
redis.call('ZREM', KEYS[3], id)
redis.call('XDEL', KEYS[4], id)
return 1
