-- Campaign tickets (agents/campaign.py), one batch of events per call, atomic: Redis runs a
-- script alone, so two campaign workers never both issue a day's last ticket.
--
-- Per campaign, JST month and person, one hash <ns>:camp:<cid>:<month>:p:<identity>:
--   login       1 once a successful login of the month was seen
--   d:<day>     tickets issued that JST day (a revoked ticket keeps its slot: see README)
--   p:<id>      "<day>|<state>|<seq>" per purchase; state issued, pending (no login yet),
--               capped (the day's cap was reached), revoked, void (revoked before it earned)
--   l:<login>   the purchases a login turned from pending to issued (re-emitted on redelivery)
--   live        the person's tickets not revoked; seq: arrival order of pending purchases
-- Per campaign and month, <ns>:camp:<cid>:<month>:stats: purchases, issued, revoked,
--   participants (people with a live ticket), eligible (people who logged in).
-- Per purchase, <ns>:camp:purchase:<id>: a set of "<cid>|<month>|<identity>" (revocations find
--   its tickets); <ns>:camp:revoked:<id> when an outcome came before the purchase's decision.
--
-- ARGV: ns, ttl seconds, then events of 7 fields each:
--   P cid month identity purchase day cap   an approved card purchase of >= the minimum
--   L cid month identity login    ''  cap   a successful login
--   R ''  ''    ''       purchase ''  ''    a fraud, chargeback or cancellation outcome
-- Returns the ledger records to produce, 6 fields each: action, cid, month, identity,
-- purchase, day (a redelivered event re-emits the current state of what it changed).

local ns, ttl = ARGV[1], tonumber(ARGV[2])
local out = {}

local function emit(action, cid, month, identity, purchase, day)
  for _, v in ipairs({action, cid, month, identity, purchase, day}) do out[#out + 1] = v end
end

local function split(text)
  local parts = {}
  for part in string.gmatch(text, '[^|]+') do parts[#parts + 1] = part end
  return parts
end

local function stats(cid, month)
  local key = ns .. ':camp:' .. cid .. ':' .. month .. ':stats'
  redis.call('EXPIRE', key, ttl)  -- kept as long as the month's tickets (month over month)
  return key
end

local function issue(h, cid, month, identity, purchase, day, cap, seq)
  local used = tonumber(redis.call('HGET', h, 'd:' .. day) or 0)
  if used >= cap then
    redis.call('HSET', h, 'p:' .. purchase, day .. '|capped|' .. seq)
    return false
  end
  redis.call('HINCRBY', h, 'd:' .. day, 1)
  redis.call('HSET', h, 'p:' .. purchase, day .. '|issued|' .. seq)
  redis.call('HINCRBY', stats(cid, month), 'issued', 1)
  if redis.call('HINCRBY', h, 'live', 1) == 1 then
    redis.call('HINCRBY', stats(cid, month), 'participants', 1)
  end
  emit('ISSUED', cid, month, identity, purchase, day)
  return true
end

local function purchase_event(cid, month, identity, purchase, day, cap)
  local index = ns .. ':camp:purchase:' .. purchase
  for _, holder in ipairs(redis.call('SMEMBERS', index)) do
    local hp = split(holder)  -- seen before, maybe under an identity merged since: that one
    if hp[1] == cid and hp[2] == month then identity = hp[3] end
  end
  local h = ns .. ':camp:' .. cid .. ':' .. month .. ':p:' .. identity
  local seen = redis.call('HGET', h, 'p:' .. purchase)
  if seen then  -- a redelivery or the same purchase sent again: its state as it is now
    local s = split(seen)
    if s[2] == 'issued' then emit('ISSUED', cid, month, identity, purchase, s[1]) end
    if s[2] == 'revoked' then emit('REVOKED', cid, month, identity, purchase, s[1]) end
    return
  end
  redis.call('HINCRBY', stats(cid, month), 'purchases', 1)
  redis.call('SADD', index, cid .. '|' .. month .. '|' .. identity)
  redis.call('EXPIRE', index, ttl)
  local seq = redis.call('HINCRBY', h, 'seq', 1)
  if redis.call('EXISTS', ns .. ':camp:revoked:' .. purchase) == 1 then
    redis.call('HSET', h, 'p:' .. purchase, day .. '|void|' .. seq)
  elseif redis.call('HGET', h, 'login') then
    issue(h, cid, month, identity, purchase, day, cap, seq)
  else
    redis.call('HSET', h, 'p:' .. purchase, day .. '|pending|' .. seq)
  end
  redis.call('EXPIRE', h, ttl)
end

local function login_event(cid, month, identity, login, cap)
  local h = ns .. ':camp:' .. cid .. ':' .. month .. ':p:' .. identity
  local turned = redis.call('HGET', h, 'l:' .. login)
  if turned then  -- this very login again: re-emit what it issued, as it is now
    for purchase in string.gmatch(turned, '[^,]+') do
      local s = split(redis.call('HGET', h, 'p:' .. purchase))
      if s[2] == 'issued' then emit('ISSUED', cid, month, identity, purchase, s[1]) end
      if s[2] == 'revoked' then emit('REVOKED', cid, month, identity, purchase, s[1]) end
    end
    return
  end
  if redis.call('HSETNX', h, 'login', 1) == 0 then return end
  redis.call('HINCRBY', stats(cid, month), 'eligible', 1)
  -- purchases made before the month's first login earn now, each capped by its own day
  local fields = redis.call('HGETALL', h)
  local pending = {}
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'p:' then
      local s = split(fields[i + 1])
      if s[2] == 'pending' then
        pending[#pending + 1] = {purchase = string.sub(fields[i], 3), day = s[1], seq = tonumber(s[3])}
      end
    end
  end
  table.sort(pending, function(a, b)
    if a.day ~= b.day then return a.day < b.day end
    return a.seq < b.seq
  end)
  local issued = {}
  for _, p in ipairs(pending) do
    if issue(h, cid, month, identity, p.purchase, p.day, cap, p.seq) then
      issued[#issued + 1] = p.purchase
    end
  end
  redis.call('HSET', h, 'l:' .. login, table.concat(issued, ',') .. ',')
  redis.call('EXPIRE', h, ttl)
end

local function revoke_event(purchase)
  local holders = redis.call('SMEMBERS', ns .. ':camp:purchase:' .. purchase)
  if #holders == 0 then  -- the outcome came first: the purchase will never earn
    redis.call('SET', ns .. ':camp:revoked:' .. purchase, 1, 'EX', ttl)
    return
  end
  for _, holder in ipairs(holders) do
    local hp = split(holder)
    local cid, month, identity = hp[1], hp[2], hp[3]
    local h = ns .. ':camp:' .. cid .. ':' .. month .. ':p:' .. identity
    local s = split(redis.call('HGET', h, 'p:' .. purchase) or '||0')
    if s[2] == 'issued' then
      redis.call('HSET', h, 'p:' .. purchase, s[1] .. '|revoked|' .. s[3])
      redis.call('HINCRBY', stats(cid, month), 'revoked', 1)
      if redis.call('HINCRBY', h, 'live', -1) == 0 then
        redis.call('HINCRBY', stats(cid, month), 'participants', -1)
      end
      emit('REVOKED', cid, month, identity, purchase, s[1])
    elseif s[2] == 'revoked' then
      emit('REVOKED', cid, month, identity, purchase, s[1])
    elseif s[2] == 'pending' or s[2] == 'capped' then
      redis.call('HSET', h, 'p:' .. purchase, s[1] .. '|void|' .. s[3])
    end
  end
end

for i = 3, #ARGV, 7 do
  local kind = ARGV[i]
  if kind == 'P' then
    purchase_event(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
                   tonumber(ARGV[i + 6]))
  elseif kind == 'L' then
    login_event(ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 6]))
  elseif kind == 'R' then
    revoke_event(ARGV[i + 4])
  end
end
return out
