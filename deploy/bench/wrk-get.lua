-- wrk script for deploy/bench/status.sh: GET the URL's path, with a random
-- user id from 1 to $STATUS_USERS appended when that is set (the status polls
-- of /coupons/ID/issues/), then $STATUS_QUERY (`?wait=5`), and, when done,
-- one machine-readable line (wrk-report.lua).
-- Usage: STATUS_USERS=20000 wrk -t1 -c64 -d10s --latency -s deploy/bench/wrk-get.lua http://HOST:PORT/coupons/ID/issues/

local users = tonumber(os.getenv("STATUS_USERS") or "")
local query = os.getenv("STATUS_QUERY") or ""
math.randomseed(os.time() * 1000 + math.floor((os.clock() * 1000000) % 1000))

request = function()
  if users then
    return wrk.format("GET", wrk.path .. math.random(1, users) .. query)
  end
  return wrk.format("GET", wrk.path)
end

-- The WRK_JSON line, next to this file.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "wrk-report.lua")
