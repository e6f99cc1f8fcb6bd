-- The identity an id belongs to now: follow the identity graph's parent hash (an id absorbed
-- by a merge points to its survivor; identity_graph.lua). Prepended to every script that needs
-- it (agents/state.py, identity.py, segments.py), so the rule is written once.
local function identity_root(parent, id)
  for _ = 1, 64 do
    local up = redis.call('HGET', parent, id)
    if not up then return id end
    id = up
  end
  return id
end
