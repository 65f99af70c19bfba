-- Write-behind: the written value becomes the path's cached entry AND an entry of the bucket's
-- queue, in one script, so a write is either in both or in neither. All keys in the bucket's
-- slot.
-- KEYS[1] the bucket's queue (a stream), KEYS[2] the entry key (the writer's variant),
-- KEYS[3] the target's variants set, KEYS[4] the target's purge tombstone, KEYS[5] the marker
-- ARGV[1] most queued entries (the bound), ARGV[2] consumer group, ARGV[3] method,
-- ARGV[4] target, ARGV[5] content type ('' none), ARGV[6] idempotency key, ARGV[7] body,
-- ARGV[8] the entry's header lines (see entry.rs), ARGV[9] fresh ms, ARGV[10] key TTL ms,
-- ARGV[11] tombstone TTL ms, ARGV[12] the bucket's entry key prefix ('{prefix}cache:{bN}:e:')
-- Reply: {'queued', stream id} or {'full', queue length}: then nothing was written.
local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then return {'full', n} end
if n == 0 then
  -- The group is made with the stream (BUSYGROUP when it exists already: nothing to do).
  redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[2], '0', 'MKSTREAM')
end
local id = redis.call('XADD', KEYS[1], '*', 'method', ARGV[3], 'target', ARGV[4],
  'type', ARGV[5], 'key', ARGV[6], 'body', ARGV[7])
-- A fill that started before this write must not store the origin's older answer.
redis.call('SET', KEYS[4], string.format('%.0f', now_us), 'PX', ARGV[11])
-- Every other variant of the path held the old value: gone.
for _, member in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if string.sub(member, 1, #ARGV[12]) == ARGV[12] then redis.call('DEL', member) end
end
redis.call('DEL', KEYS[3], KEYS[5])
local soft = now_ms + tonumber(ARGV[9])
local header = string.format('c2\n200\n%d\n%d\n0\n%d\n%d\n', now_ms, soft, soft, soft)
redis.call('SET', KEYS[2], header .. ARGV[8] .. ARGV[7], 'PX', ARGV[10])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('PEXPIRE', KEYS[3], ARGV[10])
return {'queued', id}
