-- Decayed sums of an entity (agents/entities.py `Decayed`, the same arithmetic), prepended to
-- the scripts that change them: the hot path's save (activity) and the learner's (risk).
-- A field holds `at,sum,sum,...`: sums referenced to `at` (ms) that decay with time constants
-- of 1, 7 and 30 days. Merging is commutative, so workers may add to one merchant at once.
local ENTITY_TAUS = {86400000, 604800000, 2592000000}
local ENTITY_TTL = 90 * 86400

local function parse_decayed(text)
  local out = {}
  if text then
    for v in string.gmatch(text, '[^,]+') do out[#out + 1] = tonumber(v) end
  end
  return out
end

-- Sums written before the layout gained more per scale (`kept` of `width`): the new ones at 0.
local function widen_decayed(cur, width)
  local kept = (#cur - 1) / #ENTITY_TAUS
  local out = {cur[1]}
  for k = 1, #ENTITY_TAUS do
    for j = 1, width do
      out[#out + 1] = j <= kept and cur[1 + (k - 1) * kept + j] or 0
    end
  end
  return out
end

local function merge_decayed(key, field, text)
  local add = parse_decayed(text)
  local cur = parse_decayed(redis.call('HGET', key, field))
  local width = (#add - 1) / #ENTITY_TAUS
  if #cur > 1 and #cur < #add and (#cur - 1) % #ENTITY_TAUS == 0 then
    cur = widen_decayed(cur, width)
  end
  if #cur ~= #add then
    redis.call('HSET', key, field, text)
    return
  end
  local at = cur[1]
  if add[1] > at then
    for k, tau in ipairs(ENTITY_TAUS) do
      local factor = math.exp(-(add[1] - at) / tau)
      for j = 1, width do
        local i = 1 + (k - 1) * width + j
        cur[i] = cur[i] * factor
      end
    end
    at = add[1]
  end
  local gap = at - add[1]
  local parts = {string.format('%d', at)}
  for k, tau in ipairs(ENTITY_TAUS) do
    local factor = math.exp(-gap / tau)
    for j = 1, width do
      local i = 1 + (k - 1) * width + j
      parts[#parts + 1] = string.format('%.17g', cur[i] + add[i] * factor)
    end
  end
  redis.call('HSET', key, field, table.concat(parts, ','))
end

-- One event batch's activity of an entity, and its newest event time.
local function add_activity(key, text, last)
  merge_decayed(key, 'a', text)
  local seen = tonumber(redis.call('HGET', key, 'l') or '0')
  if tonumber(last) > seen then redis.call('HSET', key, 'l', last) end
  redis.call('EXPIRE', key, ENTITY_TTL)
end
