-- Withdraw one issued code whose webhook delivery definitely failed, so the user is not left
-- with a code they can never receive and a cooldown that stops them asking again. Only what
-- that issue wrote is removed (a newer issue has another delivery id), and it stays counted
-- in the issue and client budgets, so failing deliveries cannot be used to send more messages.
--
-- KEYS[1] code state, KEYS[2] resend cooldown (of the lane issue.lua used);
-- ARGV[1] the delivery id.
local id = ARGV[1]
if redis.call('HGET', KEYS[1], 'delivery') == id then
  redis.call('DEL', KEYS[1])
end
if redis.call('GET', KEYS[2]) == id then
  redis.call('DEL', KEYS[2])
end
return 1
