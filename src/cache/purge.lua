-- Purge entries of one bucket: hard (delete) or soft (mark stale, so one request
-- revalidates while the others are served the stale copy). One script for every purge.
-- KEYS[1] the bucket's purged counter
-- KEYS[2 .. 1+ARGV[4]] tombstones to set to now (Redis microseconds: a fill that starts
--   right after a purge must not look older than it): the target's, its tags' or the
--   bucket's purge-all tombstone; the store script refuses fills that started before them
-- the next ARGV[5] keys: sets of entry keys (a target's variants, a tag's entries)
-- the keys after those: entry keys
-- ARGV[1] 'hard' or 'soft', ARGV[2] stats TTL seconds, ARGV[3] tombstone TTL ms (longer
-- than any fill), ARGV[4] tombstone count, ARGV[5] set count, ARGV[6] the bucket's key
-- base ('{prefix}cache:{bN}'), ARGV[7] channel ('' for none), ARGV[8] event text.
-- Returns the number of entries purged. All keys are in the bucket's slot.
local now = now_ms
local ntomb, nsets = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 2, 1 + ntomb do
  -- Formatted: Lua's own number-to-text conversion keeps only 14 digits.
  redis.call('SET', KEYS[i], string.format('%.0f', now_us), 'PX', ARGV[3])
end

local entries = {}
for i = 2 + ntomb, 1 + ntomb + nsets do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do entries[#entries + 1] = member end
end
for i = 2 + ntomb + nsets, #KEYS do entries[#entries + 1] = KEYS[i] end

local base = ARGV[6] .. ':e:'
local pattern = '^c2\n(%d+)\n(%d+)\n(%d+)\n(%d+)\n(%d+)\n(%d+)\n'
local seen, n = {}, 0
for _, key in ipairs(entries) do
  if not seen[key] and string.sub(key, 1, #base) == base then
    seen[key] = true
    if ARGV[1] == 'hard' then
      -- A Vary stub (standards mode) goes too, but is no entry of its own.
      local v = redis.pcall('GET', key)
      local stub = type(v) == 'string' and string.sub(v, 1, 3) == 'cv\n'
      local deleted = redis.call('DEL', key)
      if not stub then n = n + deleted end
      -- A remembered failure or pass marker goes with the entry.
      redis.call('DEL', ARGV[6] .. ':m:' .. string.sub(key, #base + 1))
    else
      local e = redis.pcall('GET', key)
      local _, stop, status, stored, soft, cost, swr, sie
      if type(e) == 'string' then
        _, stop, status, stored, soft, cost, swr, sie = string.find(e, pattern)
      end
      if stop and tonumber(soft) > now then
        soft = tonumber(soft)
        -- Stale from now, with the stale windows the origin allowed.
        local header = string.format('c2\n%d\n%d\n%d\n%d\n%d\n%d\n', tonumber(status),
          tonumber(stored), now, tonumber(cost), now + math.max(0, tonumber(swr) - soft),
          now + math.max(0, tonumber(sie) - soft))
        redis.call('SET', key, header .. string.sub(e, stop + 1), 'KEEPTTL')
        n = n + 1
      end
    end
  end
end
if ARGV[1] == 'hard' then
  for i = 2 + ntomb, 1 + ntomb + nsets do redis.call('DEL', KEYS[i]) end
end
if n > 0 then
  redis.call('INCRBY', KEYS[1], n)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
if ARGV[7] ~= '' then
  -- The event ends with "purged":0}: the count is filled in here.
  redis.call('PUBLISH', ARGV[7], (string.gsub(ARGV[8], '"purged":0}$', '"purged":' .. n .. '}')))
end
return n
