#!/usr/bin/env bash
# Many coupons at once (issue 11): does the consumers' cost follow the events
# or the number of open coupons?
#
#  (t) The table. One coupon-api (ADMIN_TOKEN set) and one coupon-consumer. For
#      each count in $COUPONS (ascending; each step creates the coupons that
#      bring the total up to it), coupons of quantity $QUANTITY, open now for
#      a day, are created through POST /coupons ($CREATE_CONCURRENCY at once);
#      after $SETTLE s, the CPU the idle consumer, Redis and coupon-api use over
#      $IDLE_SECONDS s (utime + stime from /proc/PID/stat, % of one core); then
#      a $SALE_USERS-user sale on the newest of them (coupon-fleet sale): how
#      long after its last 202 its last row is in MySQL (rows counted every
#      2 ms), or that it was not within $SALE_TIMEOUT s.
#  (s) The spread sale. A fresh Redis, database and coupon-api, and
#      $SPREAD_CONSUMERS consumers: $SPREAD_COUPONS new coupons, $SPREAD_HOT of
#      them hot ($SPREAD_HOT_SHARE of the $SPREAD_REQUESTS requests, each from a
#      new user; the rest trickle over the others), $SPREAD_CONCURRENCY in
#      flight (coupon-fleet spread): the rows in MySQL against the 202s over
#      time, the lag when the load ends, the time to drain after it, and the
#      consumers' peak RSS (VmHWM) and CPU.
#
# It reads only the HTTP API, MySQL's rows and the processes' /proc entries:
# nothing depends on how events travel from Redis to the consumers (no stream
# key names), so it measures any layout. Prints the summary table and appends
# a dated section (command, machine, commit, tables) to BENCHMARKS.md.
#
# Everything it starts (a PRIVATE redis-server on $REDIS_PORT in a temp dir,
# coupon-api, consumers) is stopped by PID on exit. It uses the machine's
# MariaDB on 127.0.0.1:3306 with its own database $DB_NAME, dropped at the
# start, between the parts and at the end. Never the machine's Redis on 6379.
# Not a test: run it by hand.
#
#   deploy/bench/coupons.sh            # full: about 3 min on 2 cores before issue 11 (+ up to SALE_TIMEOUT per stuck sale)
#   COUPONS="1 500" SPREAD_REQUESTS=100000 SETTLE=3 IDLE_SECONDS=10 deploy/bench/coupons.sh   # quick: ~1.5 min
#   CONSUMER_ENV="STREAM_PARTITIONS=64" deploy/bench/coupons.sh      # extra consumer settings
set -euo pipefail
cd "$(dirname "$0")/../.."

SETTINGS=(COUPONS QUANTITY CREATE_CONCURRENCY SETTLE IDLE_SECONDS SALE_USERS SALE_CONCURRENCY SALE_TIMEOUT
  SPREAD SPREAD_COUPONS SPREAD_HOT SPREAD_HOT_SHARE SPREAD_REQUESTS SPREAD_QUANTITY SPREAD_CONCURRENCY
  SPREAD_CONSUMERS SPREAD_TIMEOUT CONSUMER_ENV API_ENV REDIS_PORT API_PORT CONSUMER_METRICS_PORT DB_NAME BUILD)
# The command as given: the settings set in the environment, then the script.
GIVEN=""
for name in "${SETTINGS[@]}"; do
  if [ -z "${!name+x}" ]; then continue; fi
  if [[ ${!name} =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then GIVEN+="$name=${!name} "; else GIVEN+="$name='${!name}' "; fi
done
GIVEN+="deploy/bench/coupons.sh"

COUPONS=${COUPONS:-"1 5000 20000"}
QUANTITY=${QUANTITY:-1000}
CREATE_CONCURRENCY=${CREATE_CONCURRENCY:-16}
SETTLE=${SETTLE:-10}
IDLE_SECONDS=${IDLE_SECONDS:-20}
SALE_USERS=${SALE_USERS:-1000}
SALE_CONCURRENCY=${SALE_CONCURRENCY:-64}
SALE_TIMEOUT=${SALE_TIMEOUT:-300}
SPREAD=${SPREAD:-1} # 0: skip the spread sale
SPREAD_COUPONS=${SPREAD_COUPONS:-1000}
SPREAD_HOT=${SPREAD_HOT:-100}
SPREAD_HOT_SHARE=${SPREAD_HOT_SHARE:-0.9}
SPREAD_REQUESTS=${SPREAD_REQUESTS:-1000000}
SPREAD_QUANTITY=${SPREAD_QUANTITY:-1000}
SPREAD_CONCURRENCY=${SPREAD_CONCURRENCY:-128}
SPREAD_CONSUMERS=${SPREAD_CONSUMERS:-2}
SPREAD_TIMEOUT=${SPREAD_TIMEOUT:-300}
# Extra KEY=VALUE settings (space separated) for the consumers and coupon-api.
CONSUMER_ENV=${CONSUMER_ENV:-}
API_ENV=${API_ENV:-}
REDIS_PORT=${REDIS_PORT:-6392}
API_PORT=${API_PORT:-8093}
CONSUMER_METRICS_PORT=${CONSUMER_METRICS_PORT:-9480}
DB_NAME=${DB_NAME:-coupon_fleet}
BUILD=${BUILD:-1} # 0: use the release binaries as they are
BENCHMARKS_MD=${BENCHMARKS_MD:-BENCHMARKS.md}
NOTE=${NOTE:-} # a line for the BENCHMARKS.md section (what else ran, ...)
OUT=${OUT:-.run/bench/coupons-$(date -u +%Y%m%dT%H%M%SZ)}

ADMIN_TOKEN=bench-admin-token
DATABASE_URL=mysql://root@127.0.0.1:3306/$DB_NAME
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
API_URL=http://127.0.0.1:$API_PORT
BIN=./target/release
HZ=$(getconf CLK_TCK)

source deploy/bench/lib.sh
open_results coupons
DB_MADE=0
on_cleanup() {
  if [ "$DB_MADE" = 1 ]; then sql -e "DROP DATABASE IF EXISTS $DB_NAME" 2>/dev/null || true; fi
}

# Percent of one core from a tick count over SECONDS.
pct() { awk -v t="$1" -v s="$2" -v hz="$HZ" 'BEGIN { printf "%.2f", t * 100 / hz / s }'; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ------------------------------------------------------------ preparation ---
for tool in redis-server redis-cli mariadb curl jq python3 ss; do
  command -v "$tool" >/dev/null || die "$tool is missing (deploy/local/services.sh installs Redis and MariaDB)"
done
for port in "$REDIS_PORT" "$API_PORT"; do port_free "$port" || die "port $port is taken (set REDIS_PORT or API_PORT)"; done
for i in $(seq "$SPREAD_CONSUMERS"); do
  port_free $((CONSUMER_METRICS_PORT + i)) || die "port $((CONSUMER_METRICS_PORT + i)) is taken (set CONSUMER_METRICS_PORT)"
done
prev=0
for n in $COUPONS; do
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -gt "$prev" ] || die "COUPONS must be ascending positive counts (got '$COUPONS')"
  prev=$n
done
check_servers

fact date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
fact command "$GIVEN"
fact note "$NOTE"
record_machine
fact mem_gib "$(awk '/^MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
fact settings "COUPONS='$COUPONS' QUANTITY=$QUANTITY CREATE_CONCURRENCY=$CREATE_CONCURRENCY SETTLE=$SETTLE IDLE_SECONDS=$IDLE_SECONDS SALE_USERS=$SALE_USERS SALE_CONCURRENCY=$SALE_CONCURRENCY SPREAD=$SPREAD SPREAD_COUPONS=$SPREAD_COUPONS SPREAD_HOT=$SPREAD_HOT SPREAD_HOT_SHARE=$SPREAD_HOT_SHARE SPREAD_REQUESTS=$SPREAD_REQUESTS SPREAD_QUANTITY=$SPREAD_QUANTITY SPREAD_CONCURRENCY=$SPREAD_CONCURRENCY SPREAD_CONSUMERS=$SPREAD_CONSUMERS${CONSUMER_ENV:+ CONSUMER_ENV='$CONSUMER_ENV'}${API_ENV:+ API_ENV='$API_ENV'}"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"

if [ "$BUILD" = 1 ]; then
  log "building (release)"
  run cargo build --release --quiet --workspace --bins
fi
for b in coupon-api coupon-consumer coupon-fleet; do [ -x "$BIN/$b" ] || die "$BIN/$b is missing (BUILD=1)"; done

# A private Redis, a fresh database and coupon-api: what each part starts from.
start_env() { # tag
  log "private redis-server on 127.0.0.1:$REDIS_PORT, database $DB_NAME (dropped and recreated), coupon-api on $API_URL"
  REDIS_DIR=$(mktemp -d /tmp/coupon-fleet-redis.XXXXXX)
  start_bg /dev/null redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --appendonly yes \
    --appendfsync everysec --maxmemory-policy noeviction --save "" --logfile "$OUT/redis-$1.log"
  REDIS_PID=$BG_PID
  for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
  rcli ping >/dev/null || die "redis-server did not start (see $OUT/redis-$1.log)"
  record "mariadb -h 127.0.0.1 -uroot -e 'DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME'"
  DB_MADE=1
  sql -e "DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME"
  # shellcheck disable=SC2086 # API_ENV is a list of KEY=VALUE words
  start_bg "$OUT/api-$1.log" env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=info REDIS_URL="$REDIS_URL" \
    DATABASE_URL="$DATABASE_URL" LISTEN_ADDR="127.0.0.1:$API_PORT" ADMIN_TOKEN="$ADMIN_TOKEN" $API_ENV "$BIN/coupon-api"
  API_PID=$BG_PID
  wait_ready "$API_URL" "$OUT/api-$1.log"
}
stop_env() {
  stop_pid "$API_PID"
  stop_pid "$REDIS_PID"
  rm -rf "$REDIS_DIR"
  REDIS_DIR=""
}
start_consumers() { # count tag
  local i
  CONSUMER_PIDS=()
  for i in $(seq "$1"); do
    # shellcheck disable=SC2086 # CONSUMER_ENV is a list of KEY=VALUE words
    start_bg "$OUT/consumer-$2-$i.log" env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=info REDIS_URL="$REDIS_URL" \
      DATABASE_URL="$DATABASE_URL" CONSUMER_NAME="fleet-$2-$i" METRICS_ADDR="127.0.0.1:$((CONSUMER_METRICS_PORT + i))" \
      $CONSUMER_ENV "$BIN/coupon-consumer"
    CONSUMER_PIDS+=("$BG_PID")
  done
  sleep 1
  for pid in "${CONSUMER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "a consumer did not start (see $OUT/consumer-$2-*.log)"; done
}
stop_consumers() { local pid; for pid in "${CONSUMER_PIDS[@]}"; do stop_pid "$pid"; done; CONSUMER_PIDS=(); }
fleet() { run "$BIN/coupon-fleet" --api-url "$API_URL" --admin-token "$ADMIN_TOKEN" --database-url "$DATABASE_URL" "$@"; }

# ------------------------------------------------------------ (t) table -----
start_env table
start_consumers 1 table
CONSUMER=${CONSUMER_PIDS[0]}
have=0
for n in $COUPONS; do
  log "(t) $n active coupons: creating $((n - have)) through POST /coupons ($CREATE_CONCURRENCY at once)"
  fleet --json "$OUT/create-$n.json" create --count $((n - have)) --quantity "$QUANTITY" \
    --concurrency "$CREATE_CONCURRENCY" --ids "$OUT/ids-$n.txt" >"$OUT/create-$n.txt" 2>&1 ||
    die "creating coupons failed (see $OUT/create-$n.txt)"
  have=$n
  log "(t) $n coupons: settling ${SETTLE}s, then idle CPU over ${IDLE_SECONDS}s"
  sleep "$SETTLE"
  c0=$(cpu_ticks "$CONSUMER") r0=$(cpu_ticks "$REDIS_PID") a0=$(cpu_ticks "$API_PID")
  sleep "$IDLE_SECONDS"
  c1=$(cpu_ticks "$CONSUMER") r1=$(cpu_ticks "$REDIS_PID") a1=$(cpu_ticks "$API_PID")
  kill -0 "$CONSUMER" 2>/dev/null || die "the consumer exited (see $OUT/consumer-table-1.log)"
  fact "idle_consumer_pct_$n" "$(pct $((c1 - c0)) "$IDLE_SECONDS")"
  fact "idle_redis_pct_$n" "$(pct $((r1 - r0)) "$IDLE_SECONDS")"
  fact "idle_api_pct_$n" "$(pct $((a1 - a0)) "$IDLE_SECONDS")"
  fact "consumer_rss_kib_$n" "$(status_kib "$CONSUMER" VmRSS)"
  fact "redis_used_memory_$n" "$(rcli INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')"
  coupon=$(tail -1 "$OUT/ids-$n.txt")
  log "(t) $n coupons: a $SALE_USERS-user sale on coupon $coupon (the newest), then its rows in MySQL"
  fleet --json "$OUT/sale-$n.json" sale --coupon "$coupon" --users "$SALE_USERS" --concurrency "$SALE_CONCURRENCY" \
    --drain-timeout "$SALE_TIMEOUT" >"$OUT/sale-$n.txt" 2>&1 || die "the sale failed (see $OUT/sale-$n.txt)"
  log "(t) $(tail -1 "$OUT/sale-$n.txt")"
done
fact consumer_hwm_kib_table "$(status_kib "$CONSUMER" VmHWM)"
stop_consumers
stop_env

# ----------------------------------------------------- (s) spread sale ------
if [ "$SPREAD" = 1 ]; then
  start_env spread
  start_consumers "$SPREAD_CONSUMERS" spread
  log "(s) spread sale: $SPREAD_REQUESTS requests over $SPREAD_COUPONS coupons ($SPREAD_HOT hot, share $SPREAD_HOT_SHARE), $SPREAD_CONSUMERS consumers"
  declare -A t0
  for pid in "${CONSUMER_PIDS[@]}"; do t0[$pid]=$(cpu_ticks "$pid"); done
  r0=$(cpu_ticks "$REDIS_PID")
  started=$(date +%s.%N)
  fleet --json "$OUT/spread.json" spread --coupons "$SPREAD_COUPONS" --hot "$SPREAD_HOT" \
    --hot-share "$SPREAD_HOT_SHARE" --quantity "$SPREAD_QUANTITY" --requests "$SPREAD_REQUESTS" \
    --concurrency "$SPREAD_CONCURRENCY" --create-concurrency "$CREATE_CONCURRENCY" \
    --drain-timeout "$SPREAD_TIMEOUT" >"$OUT/spread.txt" 2>&1 || die "the spread sale failed (see $OUT/spread.txt)"
  elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  i=0
  for pid in "${CONSUMER_PIDS[@]}"; do
    i=$((i + 1))
    kill -0 "$pid" 2>/dev/null || die "consumer $i exited during the spread sale"
    fact "spread_consumer_hwm_kib_$i" "$(status_kib "$pid" VmHWM)"
    fact "spread_consumer_rss_kib_$i" "$(status_kib "$pid" VmRSS)"
    fact "spread_consumer_cpu_pct_$i" "$(pct $(($(cpu_ticks "$pid") - t0[$pid])) "$elapsed")"
  done
  fact spread_redis_cpu_pct "$(pct $(($(cpu_ticks "$REDIS_PID") - r0)) "$elapsed")"
  fact spread_elapsed_s "$elapsed"
  log "(s) $(tail -1 "$OUT/spread.txt")"
  stop_consumers
  stop_env
fi

sql -e "DROP DATABASE IF EXISTS $DB_NAME"
DB_MADE=0
fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 deploy/bench/coupons_summary.py "$OUT" --append "$BENCHMARKS_MD"
log "raw results in $OUT; section appended to $BENCHMARKS_MD"
