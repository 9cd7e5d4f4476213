-- Reads, in one atomic step, who holds a coupon and its quantity, for the API
-- to answer a sold-out coupon's requests from memory (api/src/admission).
--
-- KEYS[1] coupon:{p<n>}:<id>:issued  SET accepted users
-- KEYS[2] coupon:{p<n>}:<id>:meta    HASH metadata
--
-- Returns {total_quantity, {users...}}, or {-1, {}} when the state is missing.

local total = redis.call('HGET', KEYS[2], 'total_quantity')
if not total then
  return {-1, {}}
end
return {tonumber(total), redis.call('SMEMBERS', KEYS[1])}
