-- Expiry of a new pooled window counter (KEYS[1], ARGV[1] ms), and of the previous window's
-- counter (KEYS[2], ARGV[2] ms) only when it has none (PTTL -1), so a counter whose expiry
-- failed once is repaired. Both keys share the limit's hash tag.
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[2]) == -1 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
