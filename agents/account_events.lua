-- Settlement events (agents/state.py AccountStore.apply), atomic, after accounts.lua.
-- ARGV: totals key, then (account key, event, order id, yen, hours to repay) × n (events
-- checked in Python).
local totals = ARGV[1]
for i = 2, #ARGV, 5 do
  apply_event(totals, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
end
return 1
