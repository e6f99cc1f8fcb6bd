-- Account events, shared by the scripts that change accounts (prepended to state_save.lua and
-- account_events.lua by agents/state.py): the one definition of what an event does to an
-- account `<ns>:acct:<identity>` (fields `o:<order id>` → open yen, `u:<order id>` unpaid,
-- `h:on_time`, `h:late`, `h:unpaid` the repayment history dynamic credit limits read, and
-- `h:pay_hours`, `h:repaid_yen` its sums the credit features read) and
-- to the exposure totals `<ns>:exposure` (`outstanding` yen, `held` identities with an unpaid
-- order), kept in the same atomic script so the gauges read two numbers, never every account.
local function has_unpaid(key)
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'u:' then return true end
  end
  return false
end

local function add_outstanding(totals, yen)
  -- never HINCRBY 0: Lua 5.1 writes -0 as "-0", which Redis refuses as an integer
  if yen ~= 0 then redis.call('HINCRBY', totals, 'outstanding', yen) end
end

-- the account an identity's key names now: an identity absorbed by a merge (the graph's
-- `<ns>:parent`) has its account under the survivor's id (account_merge below)
local function current_account(key)
  local ns, id = string.match(key, '^(.*):acct:(.*)$')
  if not ns then return key end
  return ns .. ':acct:' .. identity_root(ns .. ':parent', id)  -- identity_root.lua, prepended
end

-- `loser` was absorbed by `winner` (identity_graph.lua): one person, one account and one
-- velocity history, so spelling variations never keep separate limits once linked
local function account_merge(ns, winner, loser)
  local l, w = ns .. ':acct:' .. loser, ns .. ':acct:' .. winner
  local fields = redis.call('HGETALL', l)
  if #fields > 0 then
    local held = (has_unpaid(w) and 1 or 0) + (has_unpaid(l) and 1 or 0)
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 2) == 'h:' then  -- repayment history adds up
        redis.call('HINCRBY', w, fields[i], tonumber(fields[i + 1]))
      else
        redis.call('HSET', w, fields[i], fields[i + 1])
      end
    end
    redis.call('DEL', l)
    local after = has_unpaid(w) and 1 or 0
    if after ~= held then redis.call('HINCRBY', ns .. ':exposure', 'held', after - held) end
  end
  local lv, wv = ns .. ':vel:' .. loser, ns .. ':vel:' .. winner
  if redis.call('EXISTS', lv) == 1 then
    local ttl = math.max(redis.call('TTL', lv), redis.call('TTL', wv))
    redis.call('ZUNIONSTORE', wv, 2, wv, lv, 'AGGREGATE', 'MIN')
    redis.call('DEL', lv)
    if ttl > 0 then redis.call('EXPIRE', wv, ttl) end
  end
end

-- outstanding yen by credit band (agents/credit.py): totals field `band:<band>`, and the band
-- each open order was approved in, `b:<order id>` in its account
local function add_band(totals, band, yen)
  if band and yen ~= 0 then redis.call('HINCRBY', totals, 'band:' .. band, yen) end
end

-- `extra`: the credit band of an approval, the hours from order to repayment of a repayment
local function apply_event(totals, key, event, order_id, amount, extra)
  key = current_account(key)
  local held_before = has_unpaid(key)
  local was_open = redis.call('HEXISTS', key, 'o:' .. order_id) == 1
  local open = tonumber(redis.call('HGET', key, 'o:' .. order_id) or 0)
  local was_unpaid = redis.call('HDEL', key, 'u:' .. order_id) == 1  -- any news lifts the hold
  local band = redis.call('HGET', key, 'b:' .. order_id)
  if event == 'approved' then
    redis.call('HSET', key, 'o:' .. order_id, amount)
    add_outstanding(totals, tonumber(amount) - open)
    if band then add_band(totals, band, 0 - open) end
    band = (extra and extra ~= '') and extra or 'COLD'
    redis.call('HSET', key, 'b:' .. order_id, band)
    add_band(totals, band, tonumber(amount))
  elseif event == 'unpaid' then
    redis.call('HSET', key, 'u:' .. order_id, 1)  -- ... unless it is that it is unpaid
    if not was_unpaid and was_open then redis.call('HINCRBY', key, 'h:unpaid', 1) end
  elseif event == 'repaid' or event == 'written_off' then
    if event == 'repaid' and was_open then  -- late: repaid after it was reported unpaid
      redis.call('HINCRBY', key, was_unpaid and 'h:late' or 'h:on_time', 1)
      local hours = math.floor(tonumber(extra) or 0)
      if hours > 0 then redis.call('HINCRBY', key, 'h:pay_hours', hours) end
      if open > 0 then redis.call('HINCRBY', key, 'h:repaid_yen', open) end
    end
    redis.call('HDEL', key, 'o:' .. order_id, 'b:' .. order_id)
    add_outstanding(totals, 0 - open)
    if band then add_band(totals, band, 0 - open) end
  end
  local held_after = has_unpaid(key)
  if held_after ~= held_before then
    redis.call('HINCRBY', totals, 'held', held_after and 1 or -1)
  end
end
