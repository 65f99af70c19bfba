-- The session script: these helpers, then one function per operation, then dispatch.lua.
--
-- A session is a hash: uid (the user id), idx (the name of the user's index key), created,
-- seen and abs (the absolute deadline), all in ms of Redis TIME; ua (user agent), dsize
-- (bytes of data) and one "d:<name>" field per top-level data key holding its JSON value.
-- The user's index is a sorted set of session digests scored by each session's expiry, so
-- expired entries are pruned with one ZREMRANGEBYSCORE.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as decimal text: Lua would write large numbers in exponent form.
local function int(n)
  return string.format('%.0f', n)
end

-- Records `member`'s expiry in the index, drops expired entries, and lets the index expire
-- with its longest-lived session.
local function index_put(idx, member, expiry, now)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', int(now))
  redis.call('ZADD', idx, int(expiry), member)
  local last = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', idx, int(tonumber(last[2])))
end

-- Slides the idle timeout: the session now expires idle_ms from now, but never after its
-- absolute deadline.
local function touch(key, idx, member, now, idle_ms, abs)
  local expiry = math.min(now + idle_ms, abs)
  redis.call('HSET', key, 'seen', int(now))
  redis.call('PEXPIREAT', key, int(expiry))
  index_put(idx, member, expiry, now)
  return expiry
end

-- The session's index key and absolute deadline, or nil when it is missing or past the
-- deadline (then it is removed, in case a TTL rounding left it a moment too long).
local function load_session(key, member, now)
  local f = redis.call('HMGET', key, 'idx', 'abs')
  if not f[1] then
    return nil
  end
  local abs = tonumber(f[2])
  if now >= abs then
    redis.call('DEL', key)
    redis.call('ZREM', f[1], member)
    return nil
  end
  return f[1], abs
end

-- The whole session, flat (Spin flattens nested arrays anyway):
-- 1, expiry, now, then the hash's field/value pairs.
local function view(key, expiry, now)
  local out = {1, expiry, now}
  local all = redis.call('HGETALL', key)
  for i = 1, #all do
    out[#out + 1] = all[i]
  end
  return out
end

