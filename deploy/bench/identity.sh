#!/usr/bin/env bash
# What knowing who asks costs: coupon-api on the same sale (quantity $QUANTITY,
# so almost every request is answered sold_out, as in a real flash sale) in
# four settings, side by side and alternated in one run ($ROUNDS rounds):
#
#   open      trusted caller, rate limits off (RATE_LIMIT_USER_PER_S=0)
#   trusted   trusted caller, the default per-user limit (5/s, burst 5)
#   hs256     AUTH_JWT_SECRET, the default limit
#   es256     AUTH_JWT_PUBLIC_KEY_FILE (P-256), the default limit
#   es256-again  the same, each of $AGAIN tokens sent about every 2 s (a person
#             pressing again, a bot): verified once, then found in the API's
#             cache of verified tokens
#
# wrk -t1 -c$CONNECTIONS -d${DURATION}s; trusted modes send {"user_id": random},
# token modes no body and a token per request (pre-minted by coupon-tokens, a
# new user each, so no request meets the limit). Per setting: requests/s, p99,
# and coupon-api's CPU per request (/proc/PID/stat over the run / requests),
# which is what a deployment pays whatever else the machine does. The limiter's
# cost is trusted - open, verification's hs256/es256 - trusted.
#
# A private redis-server on $REDIS_PORT, the machine's MariaDB with its own
# database $DB_NAME; everything it starts is stopped on exit. Appends a dated
# section to BENCHMARKS.md. Not a test: run it by hand.
#
#   deploy/bench/identity.sh          # about 2 minutes
set -euo pipefail
cd "$(dirname "$0")/../.."

REDIS_PORT=${REDIS_PORT:-6393}
API_PORT=${API_PORT:-8093}
DB_NAME=${DB_NAME:-coupon_bench_identity}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
QUANTITY=${QUANTITY:-1000}
TOKENS=${TOKENS:-400000}
AGAIN=${AGAIN:-20000}
BENCHMARKS_MD=${BENCHMARKS_MD:-BENCHMARKS.md}
OUT=${OUT:-.run/bench/identity-$(date -u +%Y%m%dT%H%M%SZ)}
ADMIN_TOKEN=bench-admin-token
API_URL=http://127.0.0.1:$API_PORT
BIN=./target/release
MODES=(open trusted hs256 es256 es256-again)

source deploy/bench/lib.sh
open_results identity
check_servers
ensure_wrk
for tool in openssl jq python3 bc; do command -v "$tool" >/dev/null || die "$tool is missing"; done
record_machine
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"

log "building (release)"
run cargo build --release --quiet -p api -p coupon-bench

REDIS_DIR=$(mktemp -d /tmp/coupon-bench-redis.XXXXXX)
start_bg /dev/null redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --appendonly no \
  --maxmemory-policy noeviction --save "" --logfile "$OUT/redis.log"
for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
rcli ping >/dev/null || die "redis-server did not start (see $OUT/redis.log)"
sql -e "DROP DATABASE IF EXISTS $DB_NAME"

log "keys and $TOKENS tokens per algorithm"
SECRET=$(openssl rand -hex 32)
run openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/es256.sec1"
run openssl pkcs8 -topk8 -nocrypt -in "$OUT/es256.sec1" -out "$OUT/es256.key"
run openssl ec -in "$OUT/es256.key" -pubout -out "$OUT/es256.pub" 2>/dev/null
t0=$(now)
run "$BIN/coupon-tokens" --count "$TOKENS" --user-offset 1000000 --jwt-secret "$SECRET" --out "$OUT/hs256.tokens"
t1=$(now)
run "$BIN/coupon-tokens" --count "$TOKENS" --user-offset 1000000 --jwt-key-file "$OUT/es256.key" --out "$OUT/es256.tokens"
t2=$(now)
head -n "$AGAIN" "$OUT/es256.tokens" >"$OUT/es256-again.tokens"
fact mint_hs256_us "$(echo "($t1 - $t0) * 1000000 / $TOKENS" | bc -l)"
fact mint_es256_us "$(echo "($t2 - $t1) * 1000000 / $TOKENS" | bc -l)"

start_api() { # mode
  local settings=()
  case $1 in
    open) settings=(RATE_LIMIT_USER_PER_S=0) ;;
    trusted) ;;
    hs256) settings=(AUTH_JWT_SECRET="$SECRET") ;;
    es256 | es256-again) settings=(AUTH_JWT_PUBLIC_KEY_FILE="$OUT/es256.pub") ;;
  esac
  start_bg "$OUT/api-$1.log" env -u OTEL_EXPORTER_OTLP_ENDPOINT -u AUTH_JWT_SECRET RUST_LOG=info \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" DATABASE_URL="mysql://root@127.0.0.1:3306/$DB_NAME" \
    LISTEN_ADDR="127.0.0.1:$API_PORT" ADMIN_TOKEN="$ADMIN_TOKEN" "${settings[@]}" "$BIN/coupon-api"
  API_PID=$BG_PID
  wait_ready "$API_URL" "$OUT/api-$1.log"
}

for round in $(seq "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    start_api "$mode"
    coupon=$(create_coupon "$API_URL" "identity $mode $round" "$QUANTITY")
    script=deploy/bench/wrk-issue.lua
    case $mode in hs256 | es256*) script=deploy/bench/wrk-jwt.lua ;; esac
    log "round $round/$ROUNDS: $mode (coupon $coupon)"
    c0=$(cpu_ticks "$API_PID")
    run env TOKENS="$OUT/$mode.tokens" wrk -t1 -c"$CONNECTIONS" -d"$DURATION"s --latency -s "$script" \
      "$API_URL/coupons/$coupon/issue" >"$OUT/wrk-$mode-$round.txt" 2>&1
    c1=$(cpu_ticks "$API_PID")
    json=$(sed -n 's/^WRK_JSON //p' "$OUT/wrk-$mode-$round.txt")
    [ -n "$json" ] || die "wrk gave no result (see $OUT/wrk-$mode-$round.txt)"
    requests=$(jq .requests <<<"$json")
    fact "${mode}_${round}_rps" "$(jq .rps <<<"$json")"
    fact "${mode}_${round}_p99_ms" "$(jq .p99_ms <<<"$json")"
    fact "${mode}_${round}_cpu_us" "$(echo "($c1 - $c0) * 1000000 / $(getconf CLK_TCK) / $requests" | bc -l)"
    fact "${mode}_${round}_status_errors" "$(jq .errors.status <<<"$json")"
    fact "${mode}_${round}_decisions" "$(curl -fsS "$API_URL/metrics" | grep '^coupon_issue_decisions_total' | tr '\n' ' ')"
    stop_pid "$API_PID"
  done
done
fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$FACTS" "$COMMANDS" "$BENCHMARKS_MD" "$ROUNDS" "$CONNECTIONS" "$DURATION" "$QUANTITY" <<'PY'
import statistics, sys, datetime
facts_path, commands_path, md_path, rounds, connections, duration, quantity = sys.argv[1:]
facts = dict(line.rstrip("\n").split("\t", 1) for line in open(facts_path))
rounds = int(rounds)
def median(mode, what):
    return statistics.median(float(facts[f"{mode}_{r}_{what}"]) for r in range(1, rounds + 1))
modes = ["open", "trusted", "hs256", "es256", "es256-again"]
names = {"open": "trusted caller, no limits", "trusted": "trusted caller, per-user limit (default)",
         "hs256": "HS256 JWT + limit", "es256": "ES256 JWT + limit, a new token each request",
         "es256-again": "ES256 JWT + limit, each token sent again every ~2 s"}
base = {w: median("open", w) for w in ("rps", "cpu_us")}
rows = []
for m in modes:
    rps, cpu, p99 = median(m, "rps"), median(m, "cpu_us"), median(m, "p99_ms")
    rows.append(f"| {names[m]} | {rps:,.0f} | {rps / base['rps']:.2f} | {cpu:.1f} | {cpu - base['cpu_us']:+.1f} | {p99:.2f} |")
limiter = median("trusted", "cpu_us") - median("open", "cpu_us")
hs = median("hs256", "cpu_us") - median("trusted", "cpu_us")
es = median("es256", "cpu_us") - median("trusted", "cpu_us")
again = median("es256-again", "cpu_us") - median("trusted", "cpu_us")
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
text = f"""
## Identity and limits: what knowing who asks costs ({when})

`deploy/bench/identity.sh` (ROUNDS={rounds}, wrk -t1 -c{connections} -d{duration}s, a sale of
{quantity} coupons: almost every answer is `sold_out`), commit {facts['commit']}, {facts['nproc']} cores
({facts['cpu']}), load at start {facts['load_start']}, at end {facts['load_end']}. Medians of the rounds; the
ratio is against the first row, measured in the same run.

| setting | req/s | × no limits | coupon-api CPU µs/request | Δ µs | p99 ms |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

- The per-user limiter costs {limiter:+.1f} µs of API CPU per request; verifying an HS256 token
  {hs:+.1f} µs, an ES256 token {es:+.1f} µs (over the limited trusted caller); an ES256 token
  sent again, found among the verified tokens, {again:+.1f} µs.
- Minting, for comparison (coupon-tokens, one core): HS256 {float(facts['mint_hs256_us']):.1f} µs, ES256
  {float(facts['mint_es256_us']):.1f} µs a token.
- Commands: `{commands_path}` of the run.
"""
with open(md_path, "a") as md:
    md.write(text)
print(text)
PY
log "appended to $BENCHMARKS_MD"
