-- Prelude of every leaderboard script: which board a request is about, and how members are
-- stored.
--
-- Periods are computed here, from Redis TIME, so every instance agrees on when a day, week,
-- month or window ends (UTC). Dates use the days-from-civil algorithms of H. Hinnant
-- (proleptic Gregorian calendar); every value stays an integer well inside a double's 2^53.

local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) -
    math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then
    y = y + 1
  end
  return y, m, d
end

local DAY = 86400000

-- The period containing `at` (ms): its id, its start and its end (ms). All-time boards have
-- one period, 'all', which never ends.
local function period(kind, window_ms, at)
  local day = math.floor(at / DAY)
  if kind == 'daily' then
    local y, m, d = civil_from_days(day)
    return string.format('%04d-%02d-%02d', y, m, d), day * DAY, (day + 1) * DAY
  elseif kind == 'weekly' then
    -- ISO 8601: weeks start on Monday (1970-01-01 was a Thursday) and belong to the year
    -- their Thursday falls in.
    local monday = day - (day + 3) % 7
    local y = civil_from_days(monday + 3)
    local week = math.floor((monday + 3 - days_from_civil(y, 1, 1)) / 7) + 1
    return string.format('%04d-W%02d', y, week), monday * DAY, (monday + 7) * DAY
  elseif kind == 'monthly' then
    local y, m = civil_from_days(day)
    local ny, nm = y, m + 1
    if nm == 13 then
      ny, nm = y + 1, 1
    end
    return string.format('%04d-%02d', y, m), days_from_civil(y, m, 1) * DAY,
      days_from_civil(ny, nm, 1) * DAY
  elseif kind == 'window' then
    local start = math.floor(at / window_ms) * window_ms
    local sday = math.floor(start / DAY)
    local y, m, d = civil_from_days(sday)
    local rest = start - sday * DAY
    return string.format('%04d-%02d-%02dT%02d:%02dZ', y, m, d, math.floor(rest / 3600000),
      math.floor(rest % 3600000 / 60000)), start, start + window_ms
  end
  return 'all', 0, nil
end

-- The period a read names: '' the current one, 'previous' the one before, else an id the
-- component has checked for shape.
local function named_period(kind, window_ms, name)
  if name == '' or name == 'previous' then
    local id, start = period(kind, window_ms, now_ms)
    if name == '' or kind == 'all' then
      return id
    end
    return (period(kind, window_ms, start - 1))
  end
  return name
end

-- A period's keys, in the board's hash slot: KEYS[1] is the board's prefix `...lb:{board}:`.
local function board_keys(id)
  return KEYS[1] .. id .. ':z', KEYS[1] .. id .. ':h'
end

-- Members are stored in the sorted set as `<stamp>|<member>`, where the 16-digit stamp is
-- 2^53 - 1 minus the Redis TIME (us) at which the member reached its current score. Equal
-- scores are ordered by the stored name, and descending order puts the larger stamp, the
-- earlier time, first: "earlier submission ranks first", exactly, with the score itself left
-- a plain double. The hash maps each member to its stored name.
local STAMP_LEN = 17

local function stored_name(member)
  return string.format('%016.0f', 9007199254740991 - now_us) .. '|' .. member
end

local function member_of(name)
  return string.sub(name, STAMP_LEN + 1)
end

-- Appends member/score pairs of a WITHSCORES reply to `out`, without the stamps.
local function append_entries(out, reply)
  for i = 1, #reply, 2 do
    out[#out + 1] = member_of(reply[i])
    out[#out + 1] = reply[i + 1]
  end
  return out
end
