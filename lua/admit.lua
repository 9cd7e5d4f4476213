-- The first-come-first-served decision for a whole batch of one coupon's
-- requests, in arrival order, atomic in Redis: each answer is exactly what
-- lua/issue.lua would have answered had the requests come one by one in this
-- order (positions, a user twice in the batch, sold out at the boundary).
--
-- KEYS[1]  coupon:{p<n>}:<id>:issued  SET of accepted user ids
-- KEYS[2]  events:{p<n>}               STREAM of the coupon's partition
-- KEYS[3]  coupon:{p<n>}:<id>:meta    HASH: total_quantity, issue_start_ms,
--          issue_end_ms, paused, expires_at_ms; absent = state lost
--          (all three share the partition's hash tag: one cluster slot)
-- ARGV     user id and MessagePack issue event, in pairs, in arrival order
--
-- Returns {code, issued, total, open_for, d1, d2, ...}, open_for being how many
-- ms are left of the issue period by Redis' TIME:
--   code 1: decided one by one; d_i is the i-th user's answer: its position
--           (> 0) when accepted, -2 already issued, -3 sold out; issued is
--           the accepted count after the batch, total the quantity
--   code 0, 4, 5, 6: the whole batch is answered alike, as issue.lua's codes
--           (state missing, not started, ended, paused); nothing is written
--
-- The period and the pause are judged once, by Redis' TIME, for the batch:
-- it is one instant. SADD answers whether the user was new, so an open
-- coupon costs one set command per user; a full one, one SISMEMBER.

local meta = redis.call('HMGET', KEYS[3], 'total_quantity', 'issue_start_ms', 'issue_end_ms', 'paused', 'expires_at_ms')
local total = tonumber(meta[1])
if not total then
  return {0, 0, 0, 0}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now < tonumber(meta[2]) then
  return {4, 0, total, 0}
end
if now >= tonumber(meta[3]) then
  return {5, 0, total, 0}
end
if meta[4] == '1' then
  return {6, 0, total, 0}
end
local issued = redis.call('SCARD', KEYS[1])
local born = issued == 0
local reply = {1, 0, total, tonumber(meta[3]) - now}
for i = 1, #ARGV, 2 do
  local user = ARGV[i]
  if issued >= total then
    if redis.call('SISMEMBER', KEYS[1], user) == 1 then
      reply[#reply + 1] = -2
    else
      reply[#reply + 1] = -3
    end
  elseif redis.call('SADD', KEYS[1], user) == 0 then
    reply[#reply + 1] = -2
  else
    issued = issued + 1
    redis.call('XADD', KEYS[2], '*', 'ev', ARGV[i + 1], 'pos', issued)
    reply[#reply + 1] = issued
  end
end
if born and issued > 0 and meta[5] then
  -- The set was born in this batch: it expires with the coupon.
  redis.call('PEXPIREAT', KEYS[1], meta[5])
end
reply[2] = issued
return reply
