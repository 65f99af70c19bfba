-- Verify a link token without its subject: the pointer issue.lua wrote under the token's
-- keyed hash names the code state, which must still be this delivery's (not replaced, used
-- or burned). Single use: the pointer and the state are deleted; a success resets the
-- lane's failure guard as verify.lua does. All keys share the subject's shard tag.
--
-- KEYS[1] the pointer. ARGV[1] the purpose.
-- Returns {1, subject} or {0}.
local v = redis.call('HMGET', KEYS[1], 'd', 'p', 's', 'k', 'g')
if not v[1] or v[2] ~= ARGV[1] then
  return {0}
end
redis.call('DEL', KEYS[1])
local state = redis.call('HMGET', v[4], 'delivery', 'hmac', 'format')
if state[1] ~= v[1] or not state[2] or state[3] ~= 'link' then
  return {0}
end
redis.call('DEL', v[4], v[5])
return {1, v[3]}
