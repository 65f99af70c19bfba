-- The write-behind queue of one bucket, for GET /api/cache/queue.
-- KEYS[1] the bucket's queue, KEYS[2] its dead-letter stream; ARGV[1] consumer group
-- Reply: {queued (delivered or not, not yet acknowledged), pending (delivered at least once,
-- not acknowledged), dead letters}
local queued, pending = redis.call('XLEN', KEYS[1]), 0
if queued > 0 then
  local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
  if not summary.err then pending = summary[1] end
end
return {queued, pending, redis.call('XLEN', KEYS[2])}
