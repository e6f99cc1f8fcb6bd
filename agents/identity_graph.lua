-- Identity graph (名寄せ): union-find over hashed match keys, one batch of records per call.
-- agents/accounts.lua and segments.lua are prepended: a merge moves the person's deferred-
-- payment account, velocity history and merchant audience rows, in this same script.
--
-- Calls are batched (SMISMEMBER, HMGET, multi-field HSET/SADD): the per-call overhead of a
-- script, not the commands, is most of its cost. Needs Redis ≥ 6.2.
-- Atomic: Redis runs a script alone, so concurrent workers never split a person or lose a link.
-- ARGV[1] namespace, ARGV[2] fan-out limit, ARGV[3] now (ms), ARGV[4] JSON batch:
--   [{"k": [match key hashes], "n": person-name hash, "t": event time ms, "o": order id or "",
--     "a": {"names": h, "addresses": h, "phones": h, "emails": h}, "s": [spelling hashes]}]
-- Returns a JSON list, per record: {"id", "new", "merged", "first", "orders", "names",
--   "addresses", "phones", "emails", "variation", "saturated"}.
--
-- A key seen with more than `limit` distinct person names (a help-desk phone, a shared office
-- mailbox, a disposable address) is saturated: it stops merging and stops being assigned.

local ns = ARGV[1]
local limit = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local batch = cjson.decode(ARGV[4])
local ORDER_TTL = 86400  -- seconds an order id is remembered, to ignore redeliveries
local KEY, PARENT, SAT = ns .. ':key', ns .. ':parent', ns .. ':saturated'
local ATTRS = {'names', 'addresses', 'phones', 'emails'}

local function find(id)
  local root, path = id, {}
  while true do
    local p = redis.call('HGET', PARENT, root)
    if not p then break end
    path[#path + 1] = root
    root = p
  end
  for _, node in ipairs(path) do redis.call('HSET', PARENT, node, root) end
  return root
end

local function seq(id) return tonumber(string.sub(id, 2)) end

local function absorb(winner, loser, t)
  redis.call('HSET', PARENT, loser, winner)
  local w, l = ns .. ':id:' .. winner, ns .. ':id:' .. loser
  for _, attr in ipairs(ATTRS) do
    redis.call('SUNIONSTORE', w .. ':' .. attr, w .. ':' .. attr, l .. ':' .. attr)
    redis.call('DEL', l .. ':' .. attr)
  end
  redis.call('SUNIONSTORE', w .. ':spell', w .. ':spell', l .. ':spell')
  redis.call('DEL', l .. ':spell')
  local lf = tonumber(redis.call('HGET', l, 'first') or t)
  local wf = tonumber(redis.call('HGET', w, 'first') or t)
  if lf < wf then redis.call('HSET', w, 'first', lf) end
  redis.call('HINCRBY', w, 'orders', tonumber(redis.call('HGET', l, 'orders') or 0))
  redis.call('HINCRBY', w, 'merges', 1 + tonumber(redis.call('HGET', l, 'merges') or 0))
  redis.call('DEL', l)
  redis.call('HINCRBY', ns .. ':stats', 'merges', 1)
  seg_merge(ns, winner, loser)  -- segments.lua (prepended): one row a merchant
  account_merge(ns, winner, loser)  -- accounts.lua (prepended): one account, one history
  redis.call('XADD', ns .. ':merges', 'MAXLEN', '~', 100000, '*',
             'winner', winner, 'loser', loser, 'at', now)
end

local function summary(root, t)
  local h = ns .. ':id:' .. root
  local result = {id = root, new = 0, merged = 0, saturated = 0, variation = 0,
                  first = tonumber(redis.call('HGET', h, 'first') or t),
                  orders = tonumber(redis.call('HGET', h, 'orders') or 0)}
  for _, attr in ipairs(ATTRS) do result[attr] = redis.call('SCARD', h .. ':' .. attr) end
  return result
end

local function resolve(rec)
  local roots, order, keys, saturated = {}, {}, {}, 0
  local n = #rec.k
  local sat = {}
  -- a key still merges unless saturated: seen with more than `limit` distinct person names
  if n > 0 then sat = redis.call('SMISMEMBER', SAT, unpack(rec.k)) end
  for i, key in ipairs(rec.k) do
    local ok = false
    if sat[i] == 0 then
      local names = ns .. ':kn:' .. key
      ok = true
      -- a new name makes the key saturated once it has more than `limit` (one call for a
      -- name seen before, two for a new one)
      if redis.call('SADD', names, rec.n) == 1 and redis.call('SCARD', names) > limit then
        redis.call('SADD', SAT, key)
        redis.call('DEL', names)
        redis.call('HINCRBY', ns .. ':stats', 'saturated_keys', 1)
        ok = false
      end
    end
    if ok then keys[#keys + 1] = key else saturated = saturated + 1 end
  end
  local current = {}
  if #keys > 0 then current = redis.call('HMGET', KEY, unpack(keys)) end
  local found = {}
  for i = 1, #keys do
    local id = current[i]
    if id then
      local root = found[id]
      if not root then
        root = find(id)
        found[id] = root
      end
      if not roots[root] then
        roots[root] = true
        order[#order + 1] = root
      end
    end
  end
  local root, new, merged = nil, 0, 0
  if #order == 0 then
    root = 'i' .. redis.call('INCR', ns .. ':seq')
    new = 1
    redis.call('HINCRBY', ns .. ':stats', 'identities', 1)
  else
    table.sort(order, function(a, b) return seq(a) < seq(b) end)
    root = order[1]  -- the oldest identity survives: ids stay stable
    for j = 2, #order do
      absorb(root, order[j], rec.t)
      merged = merged + 1
    end
  end
  local set = {}
  for i, key in ipairs(keys) do
    if current[i] ~= root then
      set[#set + 1] = key
      set[#set + 1] = root
    end
  end
  if #set > 0 then redis.call('HSET', KEY, unpack(set)) end
  local h = ns .. ':id:' .. root
  local first, last, orders = rec.t, rec.t, 1
  if new == 1 then  -- a fresh id: nothing kept under it yet, nothing to read
    redis.call('HSET', h, 'first', first, 'last', last, 'orders', 1)
  else
    local fl = redis.call('HMGET', h, 'first', 'last')
    first = math.min(tonumber(fl[1] or rec.t), rec.t)
    last = math.max(tonumber(fl[2] or rec.t), rec.t)
    redis.call('HSET', h, 'first', first, 'last', last)
    orders = redis.call('HINCRBY', h, 'orders', 1)
  end
  local result = {id = root, new = new, merged = merged, first = first, orders = orders,
                  saturated = saturated}
  for _, attr in ipairs(ATTRS) do
    local value = rec.a[attr]
    local added = 0
    if value and value ~= '' then added = redis.call('SADD', h .. ':' .. attr, value) end
    if new == 1 then
      result[attr] = added
    else
      result[attr] = redis.call('SCARD', h .. ':' .. attr)
    end
  end
  local variation = 0
  if #rec.s > 0 and redis.call('SADD', h .. ':spell', unpack(rec.s)) > 0 and new == 0 then
    variation = 1
  end
  result.variation = variation
  return result
end

-- An order seen before (redelivered after a crash) is reported, not counted again.
local out = {}
for i, rec in ipairs(batch) do
  local seen = nil
  if rec.o and rec.o ~= '' then seen = redis.call('GET', ns .. ':o:' .. rec.o) end
  if seen then
    out[i] = summary(find(seen), rec.t)
  else
    out[i] = resolve(rec)
    if rec.o and rec.o ~= '' then
      redis.call('SET', ns .. ':o:' .. rec.o, out[i].id, 'EX', ORDER_TTL)
    end
  end
end
return cjson.encode(out)
