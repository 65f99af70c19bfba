-- Removes a member (erasure requests, cheaters). KEYS[1] the board's prefix. ARGV: period
-- kind, window ms, period name, member. Returns {removed (0/1), period id}.
local id = named_period(ARGV[1], tonumber(ARGV[2]), ARGV[3])
local z, h = board_keys(id)
local name = redis.call('HGET', h, ARGV[4])
if not name then
  return {0, id}
end
redis.call('ZREM', z, name)
redis.call('HDEL', h, ARGV[4])
return {1, id}
