-- Applies an operator's change of a coupon (PATCH /coupons/{id}) to its Redis
-- metadata in one atomic step, so the issue script sees all of it or none.
--
-- KEYS[1] coupon:{p<n>}:<id>:meta    HASH metadata
-- KEYS[2] coupon:{p<n>}:<id>:issued  SET accepted users
-- KEYS[3] coupon:{p<n>}:<id>:failed  HASH users given up on
-- KEYS[4] coupon:{p<n>}:<id>:issued-at  HASH written users' issued_at
-- ARGV[1] incarnation (the MySQL row's created_at, ms), ARGV[2] name,
-- ARGV[3] total_quantity, ARGV[4] issue_start_ms, ARGV[5] issue_end_ms,
-- ARGV[6] paused ('1' or '0'), ARGV[7] when the state expires (unix ms)
--
-- Returns {1, issued} when applied; {0, 0} when Redis holds no state of this
-- incarnation (nothing to change: the rebuild installs MySQL's values when
-- the coupon is next asked for); {-1, issued} when more users were accepted
-- than the new total_quantity allows (nothing changed).

if redis.call('HGET', KEYS[1], 'incarnation') ~= ARGV[1] then
  return {0, 0}
end
local issued = redis.call('SCARD', KEYS[2])
if issued > tonumber(ARGV[3]) then
  return {-1, issued}
end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'total_quantity', ARGV[3], 'issue_start_ms', ARGV[4],
  'issue_end_ms', ARGV[5], 'paused', ARGV[6], 'expires_at_ms', ARGV[7])
-- A new end moves the state's expiry with it.
for i = 1, 4 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('PEXPIREAT', KEYS[i], ARGV[7])
  end
end
return {1, issued}
