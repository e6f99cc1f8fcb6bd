-- The hot path's read of one batch (agents/state.py HotPathState.load), one call. Keys come
-- from agents/state.py `Keys`, the one place they are laid out.
-- ARGV: n, (velocity key, account key) × n, m, (device key, order ms) × m, device window ms.
-- Returns {velocity of each identity as {member, score, ...}, account of each as {field,
-- value, ...}, failures in the window before each probe}.
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
return out
