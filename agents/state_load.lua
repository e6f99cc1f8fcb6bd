-- The hot path's read of one batch (agents/state.py HotPathState.load), one call. Keys come
-- from agents/state.py `Keys`, the one place they are laid out.
-- ARGV: n, (velocity key, account key) × n, m, (device key, order ms) × m, device window ms,
--   e, (entity key) × e.
-- Returns {velocity of each identity as {member, score, ...}, account of each as {field,
-- value, ...}, failures in the window before each probe, then each entity's {activity, risk,
-- last event ms} (agents/entities.py)}.
local n = tonumber(ARGV[1])
local out = {}
for j = 1, n do
  out[#out + 1] = redis.call('ZRANGE', ARGV[2 * j], 0, -1, 'WITHSCORES')
  out[#out + 1] = redis.call('HGETALL', ARGV[2 * j + 1])
end
local i = 2 + 2 * n
local m = tonumber(ARGV[i])
local window = tonumber(ARGV[i + 2 * m + 1])
local counts = {}
for j = 1, m do
  local at = tonumber(ARGV[i + 2 * j])
  counts[j] = redis.call('ZCOUNT', ARGV[i + 2 * j - 1], '(' .. (at - window), at)
end
out[#out + 1] = counts
i = i + 2 * m + 2
for j = 1, tonumber(ARGV[i]) do
  out[#out + 1] = redis.call('HMGET', ARGV[i + j], 'a', 'r', 'l')
end
return out
