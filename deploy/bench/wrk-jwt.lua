-- wrk script for deploy/bench/identity.sh: POST with no body and a user's JWT
-- (its `sub` is the user), the tokens read from the file named by TOKENS (one
-- per line, written by coupon-tokens), each thread starting at its own place
-- and taking the next token per request; then the same WRK_JSON line as
-- wrk-issue.lua.
-- Usage: TOKENS=tokens.txt wrk -t1 -c64 -d10s --latency -s deploy/bench/wrk-jwt.lua http://HOST:PORT/coupons/ID/issue

local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do
  tokens[#tokens + 1] = "Bearer " .. line
end
local next_token = 1

wrk.method = "POST"

local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("start", threads)
end

init = function()
  next_token = ((start or 1) - 1) * 7919 % #tokens + 1
end

request = function()
  local token = tokens[next_token]
  next_token = next_token % #tokens + 1
  return wrk.format(nil, nil, { ["Authorization"] = token }, nil)
end

-- The WRK_JSON line, next to this file.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "wrk-report.lua")
