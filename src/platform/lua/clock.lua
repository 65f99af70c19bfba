-- Prelude: the clock every instance agrees on, Redis TIME, as whole microseconds and
-- milliseconds since the Unix epoch (both fit a Lua double exactly).
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
