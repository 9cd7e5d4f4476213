-- Installs a coupon's Redis state from MySQL in one atomic step: its metadata
-- (which the issue script needs to accept anything) and its issued set, both
-- expiring a retention after the issue period ends.
--
-- KEYS[1] coupon:{p<n>}:<id>:meta         HASH metadata; `incarnation` names the MySQL row
-- KEYS[2] coupon:{p<n>}:<id>:issued       SET accepted users
-- KEYS[3] coupon:{p<n>}:<id>:rebuild-set  SET MySQL's users, filled by the caller (may be absent)
-- KEYS[4] coupon:{p<n>}:<id>:failed       HASH users given up on
-- KEYS[5] coupon:{p<n>}:<id>:issued-at    HASH user -> issued_at (ms), what the status endpoint reads
-- KEYS[6] coupon:{p<n>}:<id>:rebuild-issued-at  HASH MySQL's issued_at, filled by the caller (may be absent)
-- ARGV[1] incarnation (the row's created_at, ms), ARGV[2] name,
-- ARGV[3] total_quantity, ARGV[4] issue_start_ms, ARGV[5] issue_end_ms,
-- ARGV[6] paused ('1' or '0'), ARGV[7] when the state expires (unix ms)
-- (the metadata, as lua/amend.lua takes it too),
-- ARGV[8] 'new' (a coupon just created) or 'rebuild' (Redis lost its state)
--
-- Returns 1 when installed, 0 when this incarnation was installed already:
-- another instance got there first and may be accepting users, so nothing of
-- what it holds is touched (docs/GUARANTEES.md, guarantees 1 and 2).

local current = redis.call('HGET', KEYS[1], 'incarnation')
if current == ARGV[1] then
  redis.call('DEL', KEYS[3], KEYS[6])
  return 0
end
if current or ARGV[8] == 'new' then
  -- Another coupon's state under this id (its database was reset while Redis
  -- was not), or leftovers under an id MySQL just handed out: all stale.
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  -- Union, not replace: a consumer that committed after the rebuild read MySQL
  -- puts its users back into the set as it acks.
  redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[3])
  redis.call('DEL', KEYS[3])
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  -- Written users' times, so their status reads `issued` without MySQL; what
  -- an ack recorded meanwhile is the same row's time.
  if redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('RENAME', KEYS[6], KEYS[5])
  else
    local times = redis.call('HGETALL', KEYS[6])
    for i = 1, #times, 2 do redis.call('HSET', KEYS[5], times[i], times[i + 1]) end
    redis.call('DEL', KEYS[6])
  end
end
redis.call('HSET', KEYS[1], 'incarnation', ARGV[1], 'name', ARGV[2], 'total_quantity', ARGV[3],
  'issue_start_ms', ARGV[4], 'issue_end_ms', ARGV[5], 'paused', ARGV[6], 'expires_at_ms', ARGV[7])
for i = 1, 5 do
  if i ~= 3 then
    redis.call('PEXPIREAT', KEYS[i], ARGV[7])
  end
end
return 1
