-- wrk script for deploy/bench/status.sh: GET the URL's path, with a random
-- user id from 1 to $STATUS_USERS appended when that is set (the status polls
-- of /coupons/ID/issues/), then $STATUS_QUERY (`?wait=5`), and, when done, one machine-readable line:
--   WRK_JSON {"requests":..,"duration_s":..,"rps":..,"p50_ms":..,...,"non_2xx":..}
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

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non_2xx":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
