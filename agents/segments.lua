-- Merchant audiences (agents/segments.py), prepended to the scripts that change them: the hot
-- path's save (purchases), the KYC agent's (a person's attributes) and the identity graph's
-- (a merge moves the person, atomically with the graph); identity_root.lua comes first.
--
-- Per merchant: `<ns>:seg:m:<merchant>:rows`, one fixed-width row per customer at slot × 12
-- bytes, and `<ns>:seg:m:<merchant>:ids`, the customers' identity ids (list index = slot; ""
-- once merged away). Per person: `<ns>:seg:p:<identity>`, field `a` the attributes
-- "age band,gender,prefecture" (0 = unknown) and one field `m:<merchant>` = slot per merchant.
-- Row (little-endian): last purchase day (u16, JST days since 1970), purchases (u16), yen
-- spent (u32), age band, gender, prefecture (u8 each), live (u8: 0 once merged away).
local SEG_ROW = 12
local SEG_FMT = '<HHIBBBB'
local SEG_MAX_COUNT, SEG_MAX_YEN = 65535, 4294967295

local function seg_parts(attrs)
  local a, g, p = string.match(attrs or '', '^(%d+),(%d+),(%d+)$')
  return {tonumber(a or 0), tonumber(g or 0), tonumber(p or 0)}
end

-- a person's attributes after `new`: what `new` knows wins, what it lacks stays
local function seg_attrs_merge(old, new)
  local o, n = seg_parts(old), seg_parts(new)
  for i = 1, 3 do
    if n[i] ~= 0 then o[i] = n[i] end
  end
  return table.concat(o, ',')
end

-- copy a person's attributes into each of its merchants' rows
local function seg_rewrite_rows(ns, identity, attrs)
  local a = seg_parts(attrs)
  local patch = struct.pack('BBB', a[1], a[2], a[3])
  local fields = redis.call('HGETALL', ns .. ':seg:p:' .. identity)
  for i = 1, #fields, 2 do
    local f = fields[i]
    if string.sub(f, 1, 2) == 'm:' then
      local rows = ns .. ':seg:m:' .. string.sub(f, 3) .. ':rows'
      redis.call('SETRANGE', rows, tonumber(fields[i + 1]) * SEG_ROW + 8, patch)
    end
  end
end

-- what an event tells of a person ("" tells nothing); returns the attributes now known
local function seg_person(ns, identity, attrs)
  local p = ns .. ':seg:p:' .. identity
  local old = redis.call('HGET', p, 'a')
  if attrs == '' then return old or '0,0,0' end
  local now = seg_attrs_merge(old, attrs)
  if now ~= old then
    redis.call('HSET', p, 'a', now)
    seg_rewrite_rows(ns, identity, now)
  end
  return now
end

local function seg_purchase(ns, merchant, identity, day, yen, attrs)
  -- merged since it was resolved: the survivor bought (identity_root.lua, prepended)
  identity = identity_root(ns .. ':parent', identity)
  local a = seg_parts(seg_person(ns, identity, attrs))
  local p = ns .. ':seg:p:' .. identity
  local rows = ns .. ':seg:m:' .. merchant .. ':rows'
  local slot = redis.call('HGET', p, 'm:' .. merchant)
  local last, count, spent = day, 1, math.min(yen, SEG_MAX_YEN)
  if slot then
    local off = tonumber(slot) * SEG_ROW
    local l, c, s = struct.unpack('<HHI', redis.call('GETRANGE', rows, off, off + 7))
    last = math.max(l, day)
    count = math.min(c + 1, SEG_MAX_COUNT)
    spent = math.min(s + yen, SEG_MAX_YEN)
  else
    slot = redis.call('RPUSH', ns .. ':seg:m:' .. merchant .. ':ids', identity) - 1
    redis.call('HSET', p, 'm:' .. merchant, slot)
  end
  redis.call('SETRANGE', rows, tonumber(slot) * SEG_ROW,
             struct.pack(SEG_FMT, last, count, spent, a[1], a[2], a[3], 1))
end

-- `loser` was absorbed by `winner`: its rows become the winner's (one row a merchant)
local function seg_merge(ns, winner, loser)
  local lp = ns .. ':seg:p:' .. loser
  local fields = redis.call('HGETALL', lp)
  if #fields == 0 then return end
  local wp = ns .. ':seg:p:' .. winner
  local lost = '0,0,0'
  for i = 1, #fields, 2 do
    if fields[i] == 'a' then lost = fields[i + 1] end
  end
  -- the survivor's known attributes stand; the absorbed one's fill what it lacks
  local attrs = seg_attrs_merge(lost, redis.call('HGET', wp, 'a') or '0,0,0')
  redis.call('HSET', wp, 'a', attrs)
  for i = 1, #fields, 2 do
    local f = fields[i]
    if string.sub(f, 1, 2) == 'm:' then
      local merchant = string.sub(f, 3)
      local rows = ns .. ':seg:m:' .. merchant .. ':rows'
      local ids = ns .. ':seg:m:' .. merchant .. ':ids'
      local slot = tonumber(fields[i + 1])
      local kept = redis.call('HGET', wp, f)
      if kept then
        local off, won = slot * SEG_ROW, tonumber(kept) * SEG_ROW
        local l1, c1, s1 = struct.unpack('<HHI', redis.call('GETRANGE', rows, off, off + 7))
        local l2, c2, s2 = struct.unpack('<HHI', redis.call('GETRANGE', rows, won, won + 7))
        redis.call('SETRANGE', rows, won, struct.pack('<HHI', math.max(l1, l2),
                   math.min(c1 + c2, SEG_MAX_COUNT), math.min(s1 + s2, SEG_MAX_YEN)))
        redis.call('SETRANGE', rows, off, struct.pack(SEG_FMT, 0, 0, 0, 0, 0, 0, 0))
        redis.call('LSET', ids, slot, '')
      else
        redis.call('HSET', wp, f, slot)
        redis.call('LSET', ids, slot, winner)
      end
    end
  end
  redis.call('DEL', lp)
  seg_rewrite_rows(ns, winner, attrs)
end
