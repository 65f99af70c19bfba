-- A member's rank and score with its neighbours. KEYS[1] the board's prefix. ARGV: period
-- kind, window ms, period name, member, neighbours on each side.
-- Returns {total, period id} when the member is not on the board, else {total, period id,
-- rank (0-based), rank of the first entry, then member, score pairs}.
local id = named_period(ARGV[1], tonumber(ARGV[2]), ARGV[3])
local z, h = board_keys(id)
local out = {redis.call('ZCARD', z), id}
local name = redis.call('HGET', h, ARGV[4])
local rank = name and redis.call('ZREVRANK', z, name)
if not rank then
  return out
end
local k = tonumber(ARGV[5])
local first = math.max(0, rank - k)
out[3], out[4] = rank, first
return append_entries(out, redis.call('ZREVRANGE', z, first, rank + k, 'WITHSCORES'))
