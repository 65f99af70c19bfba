-- Submits a score. KEYS[1] the board's prefix. ARGV: mode (best | latest | increment), the
-- value (score or increment, decimal text), period kind, window ms, retention ms, max
-- members, member.
-- Returns {changed (0/1), score, rank (0-based; nil when the cap trimmed the member), total,
-- period id}, or {-1} when an increment would overflow to infinity.
local mode, value = ARGV[1], tonumber(ARGV[2])
local id, _, ends = period(ARGV[3], tonumber(ARGV[4]), now_ms)
local z, h = board_keys(id)
local member = ARGV[7]

local old = redis.call('HGET', h, member)
local old_score = old and tonumber(redis.call('ZSCORE', z, old))
local score = value
if mode == 'increment' then
  score = (old_score or 0) + value
  if score == math.huge or score == -math.huge then
    return {-1}
  end
elseif mode == 'best' and old_score and value <= old_score then
  -- ZADD GT's rule: only a strictly higher score replaces, and a tie keeps the earlier time.
  score = old_score
end

local name, total = old, nil
if score ~= old_score then
  -- The member reached this score now: restamp it.
  if old then
    redis.call('ZREM', z, old)
  end
  name = stored_name(member)
  redis.call('ZADD', z, string.format('%.17g', score), name)
  redis.call('HSET', h, member, name)
  -- The cap: remove the lowest ranked (the lowest score, the latest among equals).
  total = redis.call('ZCARD', z)
  local excess = total - tonumber(ARGV[6])
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', z, excess)
    for i = 1, #popped, 2 do
      redis.call('HDEL', h, member_of(popped[i]))
    end
    total = total - #popped / 2
  end
  if ends then
    local expiry = string.format('%.0f', ends + tonumber(ARGV[5]))
    redis.call('PEXPIREAT', z, expiry)
    redis.call('PEXPIREAT', h, expiry)
  end
else
  total = redis.call('ZCARD', z)
end

return {score ~= old_score and 1 or 0, string.format('%.17g', score),
  redis.call('ZREVRANK', z, name), total, id}
