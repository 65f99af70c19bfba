-- The session script: these helpers, then one function per operation, then dispatch.lua.
--
-- A session is one string key holding a JSON object (cjson), so a plain GET reads it whole:
-- the fast path reads it through Spin's key-value store, which only does GET. Fields: uid,
-- idx (the name of the user's index key), created, seen, exp (the idle deadline, also the
-- key's expiry) and abs (the absolute deadline), all ms of Redis TIME; ua, dsize (bytes of
-- data) and data: name -> that value's JSON text as a string, never parsed here, so numbers
-- round-trip exactly. Each script decodes, changes and writes the whole value atomically.
-- The user's index is a sorted set of session digests scored by each session's expiry, so
-- expired entries are pruned with one ZREMRANGEBYSCORE.

-- Integers as decimal text: Lua would write large numbers in exponent form. (cjson writes
-- 14 significant digits: ms timestamps have 13 until the year 2286.)
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

-- Writes the session and slides its idle timeout: it now expires idle_ms from now, but never
-- after its absolute deadline. Returns the JSON written. (SET then PEXPIREAT, not SET PXAT:
-- Redis 6.0 has no PXAT.)
local function save(key, s, member, now, idle_ms)
  s.seen = now
  s.exp = math.min(now + idle_ms, s.abs)
  local raw = cjson.encode(s)
  redis.call('SET', key, raw)
  redis.call('PEXPIREAT', key, int(s.exp))
  index_put(s.idx, member, s.exp, now)
  return raw
end

-- What a stored value is, told by its decoded top-level members, never by searching its text
-- (the holder writes data names and values, and those are nested under `data`): 'session' (a
-- record with uid and abs) or 'forward' (a rotated id's record {fwd = new member, idx}); nil
-- for anything else (missing, not JSON, damage). Returns the kind and the decoded table.
local function kind(raw)
  if type(raw) ~= 'string' then
    return nil
  end
  local ok, s = pcall(cjson.decode, raw)
  if not ok or type(s) ~= 'table' then
    return nil
  end
  if type(s.uid) == 'string' and type(s.abs) == 'number' then
    return 'session', s
  end
  if type(s.fwd) == 'string' then
    return 'forward', s
  end
  return nil, s
end

-- The session, decoded, with the key and member it really lives under, and whether it was
-- reached through a rotated id's forward record; nil when it is missing or past its absolute
-- deadline (then it is removed, in case a TTL rounding left it a moment too long). A rotated
-- id's key is a forward record for a short grace period: it is followed once (same slot: same
-- tag), and only to the session that names that id as its previous one. A value that is not
-- a session record (a hash written before sessions were strings, or damage) is removed too:
-- it reads as an ended session, never as an error.
local function load(key, member, now, followed)
  local raw = redis.pcall('GET', key)
  if type(raw) ~= 'string' then
    if raw then
      redis.call('DEL', key)
    end
    return nil
  end
  local what, s = kind(raw)
  if what == 'forward' and not followed then
    local prefix = string.sub(key, 1, #key - #member)
    local target, k, m = load(prefix .. s.fwd, s.fwd, now, true)
    if target and target.prev == member then
      return target, k, m, true
    end
    return nil
  end
  if what == 'session' and now < s.abs then
    return s, key, member, false
  end
  redis.call('DEL', key)
  if type(s) == 'table' and type(s.idx) == 'string' then
    redis.call('ZREM', s.idx, member)
  end
  return nil
end

-- The caller's session for anything but a read of it. A rotated-away id reaches the session
-- only to read it during the grace, never to change, rotate, list or end it (else whoever
-- holds a pre-rotation id could take the session over). Returns the session, key and member;
-- or nil and the reply: {0} no session, {5} a rotated-away id.
local function load_own(key, member, now)
  local s, k, m, forwarded = load(key, member, now)
  if not s then
    return nil, {0}
  end
  if forwarded then
    return nil, {5}
  end
  return s, k, m
end

-- A session's handle: the first 16 characters of the digest it was created under, kept in
-- the record (`h`) so rotation does not change it (records from before `h` was kept: their
-- member's first 16).
local function handle_of(s, member)
  return s.h or string.sub(member, 1, 16)
end

-- The member of the user's index whose live session has handle `handle`, or nil. Forward
-- records are never matched: a rotated session is found by the handle it always had, so a
-- holder cannot escape revocation by handle by rotating.
local function by_handle(idx, handle, now, prefix)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', int(now))
  local members = redis.call('ZRANGE', idx, 0, -1)
  for i = 1, #members do
    local what, s = kind(redis.pcall('GET', prefix .. members[i]))
    if what == 'session' and handle_of(s, members[i]) == handle then
      return members[i]
    end
  end
  return nil
end
