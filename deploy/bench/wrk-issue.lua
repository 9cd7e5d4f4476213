-- wrk script for deploy/bench/run.sh: POST {"user_id": N} with a random N per
-- request (up to 2 * 10^15, so every request is a new user and is accepted),
-- and, when done, one machine-readable line (wrk-report.lua).
-- Usage: wrk -t1 -c64 -d10s --latency -s deploy/bench/wrk-issue.lua http://HOST:PORT/coupons/ID/issue

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

-- Different runs (and threads) draw different users.
math.randomseed(os.time() * 1000 + math.floor((os.clock() * 1000000) % 1000))

request = function()
  return wrk.format(nil, nil, nil,
    string.format('{"user_id":%d%06d}', math.random(1, 2000000000), math.random(0, 999999)))
end

-- The WRK_JSON line, next to this file.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "wrk-report.lua")
