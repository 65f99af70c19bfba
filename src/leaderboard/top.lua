-- The top of a board. KEYS[1] the board's prefix. ARGV: period kind, window ms, period name
-- ('' | previous | an id), offset, limit.
-- Returns {total, period id, then member, score pairs from rank `offset` on}.
local id = named_period(ARGV[1], tonumber(ARGV[2]), ARGV[3])
local z = board_keys(id)
local offset, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {redis.call('ZCARD', z), id}
if limit > 0 then
  append_entries(out, redis.call('ZREVRANGE', z, offset, offset + limit - 1, 'WITHSCORES'))
end
return out
