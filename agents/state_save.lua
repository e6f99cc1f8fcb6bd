-- The hot path's write of one batch (agents/state.py HotPathState.save), atomic: Redis runs a
-- script alone, so a crash leaves all of a batch's state changes and decisions or none.
-- One call instead of ~7 pipelined commands an order (their Python-side cost dominated).
-- Keys come from agents/state.py `Keys`; accounts change through accounts.lua's
-- `apply_event` (prepended), which keeps the exposure totals.
-- ARGV: snapshot ttl s, trace ttl s, history ttl s, history window ms, history max,
--   then n velocity entries: n, (velocity key, event ms, member) × n,
--   then the totals key and m approved deferred orders: totals key, m,
--   (account key, order id, yen, credit band) × m,
--   then k decided orders: k, (snapshot key, snapshot json, decision key, Decision bytes,
--   trace key, trace bytes) × k,
--   then e entities' activity: e, (entity key, activity text, newest event ms) × e
--   (`add_activity` from entities.lua, prepended),
--   then the namespace and s purchases for merchant audiences: ns, s,
--   (merchant id, identity id, JST day, yen, person attributes) × s (`seg_purchase` from
--   segments.lua, prepended).
local ttl, trace_ttl, hist_ttl = ARGV[1], ARGV[2], ARGV[3]
local hist_ms, hist_max = tonumber(ARGV[4]), tonumber(ARGV[5])
local i = 6
local newest, order = {}, {}
for _ = 1, tonumber(ARGV[i]) do
  local key, at = ARGV[i + 1], tonumber(ARGV[i + 2])
  redis.call('ZADD', key, 'NX', at, ARGV[i + 3])
  if newest[key] == nil then order[#order + 1] = key end
  if newest[key] == nil or at > newest[key] then newest[key] = at end
  i = i + 3
end
local totals = ARGV[i + 1]
i = i + 2
for _, key in ipairs(order) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', newest[key] - hist_ms)
  redis.call('ZREMRANGEBYRANK', key, 0, -(hist_max + 1))
  redis.call('EXPIRE', key, hist_ttl)
end
for _ = 1, tonumber(ARGV[i]) do
  apply_event(totals, ARGV[i + 1], 'approved', ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
  i = i + 4
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'EX', ttl)
  redis.call('SET', ARGV[i + 3], ARGV[i + 4], 'EX', ttl)
  redis.call('SET', ARGV[i + 5], ARGV[i + 6], 'EX', trace_ttl)
  i = i + 6
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  add_activity(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  i = i + 3
end
local ns = ARGV[i + 1]
i = i + 2
for _ = 1, tonumber(ARGV[i]) do
  seg_purchase(ns, ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]),
               ARGV[i + 5])
  i = i + 5
end
return 1
