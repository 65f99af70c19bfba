-- Drain: the outcome of one delivery. All keys in the bucket's slot.
-- KEYS[1] the bucket's queue, KEYS[2] the hash of failed attempts, KEYS[3] the bucket's
-- dead-letter stream
-- ARGV[1] consumer group, ARGV[2] entry id, ARGV[3] outcome: 'ack' (the origin answered
-- 2xx), 'retry' (it failed; the entry stays pending, to be retried after its backoff) or
-- 'dead' (moved to the dead-letter stream), ARGV[4] attempt, ARGV[5] what the origin said
-- Reply: 1 when the entry was still pending here, 0 when it was not.
-- Acknowledged and deleted together: the queue's length is what is still to deliver, so its
-- bound never counts, let alone trims, a write that was acknowledged to a client.
local failed = KEYS[2]
if ARGV[3] == 'retry' then
  redis.call('HSET', failed, ARGV[2], ARGV[4])
  return 1
end
if ARGV[3] == 'dead' then
  local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  if e[1] then
    local fields = {'id', ARGV[2], 'attempts', ARGV[4], 'error', ARGV[5]}
    for _, v in ipairs(e[1][2]) do fields[#fields + 1] = v end
    redis.call('XADD', KEYS[3], '*', unpack(fields))
  end
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', failed, ARGV[2])
return acked
