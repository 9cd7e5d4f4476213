-- The whole first-come-first-served decision, atomic in Redis.
--
-- KEYS[1]  coupon:{p<n>}:<id>:issued  SET of accepted user ids
-- KEYS[2]  events:{p<n>}               STREAM of the coupon's partition, read by the consumers
-- KEYS[3]  coupon:{p<n>}:<id>:meta    HASH with total_quantity, the issue period
--          (issue_start_ms, issue_end_ms) and paused; absent = state lost
--          (all three share the partition's hash tag: one cluster slot)
-- ARGV[1]  user id
-- ARGV[2]  the MessagePack issue event
--
-- Returns {code, n}:
--   {1, position}  accepted: added to the set and the event appended
--   {2, 0}         already issued to this user
--   {3, issued}    sold out
--   {4, 0}         the issue period has not started
--   {5, 0}         the issue period has ended
--   {6, 0}         the sale is paused
--   {0, 0}         the coupon's Redis state is missing and must be rebuilt
--                  from MySQL before anything is accepted (guarantee 4,
--                  docs/GUARANTEES.md)
--
-- One clock: the period is judged by Redis' own TIME, so every API instance
-- agrees to the millisecond whatever its own clock says, and an operator's
-- change of period, pause or quantity (written to the metadata) is in force
-- for the very next request. The duplicate check comes before the quantity
-- check so a user who already has the coupon is told so even once it is sold
-- out. SADD is the first write, so a refused script (OOM, wrong type) changes
-- nothing.

local meta = redis.call('HMGET', KEYS[3], 'total_quantity', 'issue_start_ms', 'issue_end_ms', 'paused')
local total = meta[1]
if not total then
  return {0, 0}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if now < tonumber(meta[2]) then
  return {4, 0}
end
if now >= tonumber(meta[3]) then
  return {5, 0}
end
if meta[4] == '1' then
  return {6, 0}
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return {2, 0}
end
local issued = redis.call('SCARD', KEYS[1])
if issued >= tonumber(total) then
  return {3, issued}
end
redis.call('SADD', KEYS[1], ARGV[1])
if issued == 0 then
  -- The set is born with this first acceptance: it expires with the coupon.
  local expires = redis.call('HGET', KEYS[3], 'expires_at_ms')
  if expires then
    redis.call('PEXPIREAT', KEYS[1], expires)
  end
end
redis.call('XADD', KEYS[2], '*', 'ev', ARGV[2], 'pos', issued + 1)
return {1, issued + 1}
