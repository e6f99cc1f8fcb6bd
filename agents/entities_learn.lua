-- The learner's write of one batch of labels (agents/state.py SnapshotStore.mark_learned),
-- atomic: each snapshot records the label it learned, and its entities' known risk grows, in
-- one script, so a learner that dies and re-learns a label never counts it twice (the risk is
-- added only where the snapshot's label changes). `merge_decayed` comes from entities.lua.
-- ARGV: n, (snapshot key, snapshot json) × n, m, (entity key, risk text) × m.
local i = 1
for _ = 1, tonumber(ARGV[i]) do
  redis.call('SET', ARGV[i + 1], ARGV[i + 2], 'KEEPTTL')
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  merge_decayed(ARGV[i + 1], 'r', ARGV[i + 2])
  redis.call('EXPIRE', ARGV[i + 1], ENTITY_TTL)
  i = i + 2
end
return 1
