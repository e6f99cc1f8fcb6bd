-- One step of recounting the exposure totals (agents/state.py AccountStore.recount): SCAN
-- from a cursor and sum the accounts found, in Redis (one round trip and ~1-3 ms of Redis per
-- COUNT keys, whatever the key). The totals are otherwise kept by every account change
-- (accounts.lua); a recount is for accounts written before that, once.
-- Account fields are `o:<order id>` (open, yen) and `u:<order id>` (unpaid).
-- ARGV: cursor, match pattern, count. Returns {next cursor, outstanding yen, held identities}.
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local total, held = 0, 0
for _, key in ipairs(found[2]) do
  local fields = redis.call('HGETALL', key)
  local unpaid = false
  for j = 1, #fields, 2 do
    local kind = string.sub(fields[j], 1, 2)
    if kind == 'o:' then
      total = total + tonumber(fields[j + 1])
    elseif kind == 'u:' then
      unpaid = true
    end
  end
  if unpaid then held = held + 1 end
end
return {found[1], total, held}
