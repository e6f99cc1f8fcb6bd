-- Account events, shared by the scripts that change accounts (prepended to state_save.lua and
-- account_events.lua by agents/state.py): the one definition of what an event does to an
-- account `<ns>:acct:<identity>` (fields `o:<order id>` → open yen, `u:<order id>` unpaid) and
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

local function apply_event(totals, key, event, order_id, amount)
  local held_before = has_unpaid(key)
  local open = tonumber(redis.call('HGET', key, 'o:' .. order_id) or 0)
  redis.call('HDEL', key, 'u:' .. order_id)  -- any news on an order lifts its unpaid hold ...
  if event == 'approved' then
    redis.call('HSET', key, 'o:' .. order_id, amount)
    add_outstanding(totals, tonumber(amount) - open)
  elseif event == 'unpaid' then
    redis.call('HSET', key, 'u:' .. order_id, 1)  -- ... unless it is that it is unpaid
  elseif event == 'repaid' or event == 'written_off' then
    redis.call('HDEL', key, 'o:' .. order_id)
    add_outstanding(totals, 0 - open)
  end
  local held_after = has_unpaid(key)
  if held_after ~= held_before then
    redis.call('HINCRBY', totals, 'held', held_after and 1 or -1)
  end
end
