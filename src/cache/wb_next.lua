-- Drain: the next queue entry of one bucket to deliver, under the bucket's lease (one drain
-- per bucket at a time, so entries go out one by one in queue order). All keys in the
-- bucket's slot.
-- KEYS[1] the bucket's queue, KEYS[2] the bucket's drain lease, KEYS[3] the hash of failed
-- attempts (entry id -> the attempt that failed last)
-- ARGV[1] consumer group, ARGV[2] consumer, ARGV[3] this drain's lease token,
-- ARGV[4] lease TTL ms, ARGV[5] first retry delay ms, ARGV[6] longest retry delay ms
-- Reply:
--   {'busy'}              another drain holds the bucket
--   {'empty'}             nothing queued
--   {'wait', ms}          the oldest entry failed and waits its backoff this much longer
--   {'again'}             a pending entry had been deleted by hand: ask again
--   {'entry', id, attempt, method, target, type, key, body}
-- Pending entries (delivered, never acknowledged: a failed attempt, or a drain that died)
-- are always older than new ones, so the oldest pending entry goes first, after its backoff:
-- first retry delay * 2^(deliveries - 1), capped; none after a drain that died (its lease
-- has expired, so it is not running).
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[3] then return {'busy'} end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'empty'} end

local function reply(id, attempt, fields)
  local f = {}
  for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
  return {'entry', id, attempt, f.method or 'PUT', f.target or '', f.type or '', f.key or '', f.body or ''}
end

local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1)
if pending.err then
  -- NOGROUP: the stream outlived its group (made by hand, or the group was destroyed).
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0')
  pending = {}
end
if #pending > 0 then
  local id, idle, deliveries = pending[1][1], pending[1][3], pending[1][4]
  local failed = redis.call('HGET', KEYS[3], id)
  local wait = 0
  if failed then
    wait = math.min(tonumber(ARGV[6]), tonumber(ARGV[5]) * 2 ^ (tonumber(failed) - 1))
  end
  if idle < wait then return {'wait', math.ceil(wait - idle)} end
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  if claimed[1] and claimed[1][2] then return reply(id, deliveries + 1, claimed[1][2]) end
  -- Deleted while pending (by hand): nothing to deliver; look again.
  redis.call('XACK', KEYS[1], ARGV[1], id)
  return {'again'}
end
local new = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if not new or not new[1][2][1] then return {'empty'} end
local e = new[1][2][1]
return reply(e[1], 1, e[2])
