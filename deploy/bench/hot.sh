#!/usr/bin/env bash
# The hot coupon (issue 14): coupon-api's batched admission and sold-out memory
# against the per-request EVALSHA best case (coupon-ceiling), in one run.
#
# For each of $ROUNDS rounds, wrk -t$WRK_THREADS -c$CONNECTIONS for
# $DURATION s, random users (deploy/bench/wrk-issue.lua), one at a time:
#  sale-api / sale-ceiling    a fresh coupon of $QUANTITY units: the sale
#                             (the first $QUANTITY accepted, the rest sold out)
#  soldout-api / -ceiling     the same coupons again, now sold out: every answer
#                             is sold_out
#  soldout-floor              coupon-ceiling's trivial route: the same request
#                             answered a fixed 409 with no Redis call, the least
#                             any answer costs on this axum/hyper stack and
#                             kernel (the floor under soldout-api)
#  accept-api / accept-wait   a coupon so big that every request is accepted,
#                             on coupon-api with REDIS_WAIT_REPLICAS=0 and on a
#                             second coupon-api with REDIS_WAIT_REPLICAS=1 (one
#                             replica of the private Redis)
#  sale-wait                  the sale on the REDIS_WAIT_REPLICAS=1 instance
# For each: requests/s, p99, the server's CPU per request (utime + stime from
# /proc/PID/stat) and Redis' (used_cpu_user + used_cpu_sys from INFO cpu)
# divided by the requests. hot_summary.py prints the ratios against the
# targets and appends a section to BENCHMARKS.md.
#
# Everything it starts (a PRIVATE redis-server master on $REDIS_PORT and its
# replica on $REPLICA_PORT in temp dirs, two coupon-api, coupon-ceiling) is
# stopped by PID on exit. MariaDB on 127.0.0.1:3306 with its own database
# $DB_NAME (dropped and recreated). Never the machine's Redis on 6379. Not a
# test: run it by hand.
#
#   deploy/bench/hot.sh                  # about 3 min on 2 cores
#   ROUNDS=1 DURATION=5 deploy/bench/hot.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

PARTITIONS=${STREAM_PARTITIONS:-16}
ckey() { echo "coupon:{p$(( $1 % PARTITIONS ))}:$1:$2"; }

REDIS_PORT=${REDIS_PORT:-6392}
REPLICA_PORT=${REPLICA_PORT:-6393}
API_PORT=${API_PORT:-8095}
WAIT_PORT=${WAIT_PORT:-8096}
CEILING_PORT=${CEILING_PORT:-8097}
DB_NAME=${DB_NAME:-coupon_hot_bench}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
QUANTITY=${QUANTITY:-1000}
BENCHMARKS_MD=${BENCHMARKS_MD:-BENCHMARKS.md}
OUT=${OUT:-.run/bench/hot-$(date -u +%Y%m%dT%H%M%SZ)}

ADMIN_TOKEN=bench-admin-token
DATABASE_URL=mysql://root@127.0.0.1:3306/$DB_NAME
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
BIN=./target/release
HUGE=1000000000000

source deploy/bench/lib.sh
open_results hot

for tool in redis-server redis-cli mariadb curl jq python3 ss; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
ensure_wrk
# Built before the ports are checked: a long build leaves time for another
# process to take one.
log "building (release)"
run cargo build --release --quiet -p api -p coupon-bench
[ "$REPLICA_PORT" != 6379 ] || die "REPLICA_PORT must not be the machine's Redis (6379)"
for port in "$REDIS_PORT" "$REPLICA_PORT" "$API_PORT" "$WAIT_PORT" "$CEILING_PORT"; do
  port_free "$port" || die "port $port is taken"
done
check_servers
fact date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
record_machine
fact settings "CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS DURATION=$DURATION ROUNDS=$ROUNDS QUANTITY=$QUANTITY"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"


REDIS_DIR=$(mktemp -d /tmp/coupon-hot-redis.XXXXXX)
mkdir -p "$REDIS_DIR/master" "$REDIS_DIR/replica"
redis_server() { # port dir log [args]
  local port=$1 dir=$2 logfile=$3
  shift 3
  start_bg /dev/null redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes \
    --appendfsync everysec --maxmemory-policy noeviction --save "" --logfile "$logfile" "$@"
}
log "private redis-server on $REDIS_PORT and its replica on $REPLICA_PORT"
redis_server "$REDIS_PORT" "$REDIS_DIR/master" "$OUT/redis.log"
REDIS_PID=$BG_PID
redis_server "$REPLICA_PORT" "$REDIS_DIR/replica" "$OUT/replica.log" --replicaof 127.0.0.1 "$REDIS_PORT"
for _ in $(seq 100); do
  redis-cli -p "$REPLICA_PORT" INFO replication 2>/dev/null | grep -q master_link_status:up && break
  sleep 0.1
done
redis-cli -p "$REPLICA_PORT" INFO replication | grep -q master_link_status:up || die "the replica did not link"

log "MariaDB database $DB_NAME (dropped and recreated)"
sql -e "DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME"

api() { # log port wait_replicas
  start_bg "$1" env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=info REDIS_URL="$REDIS_URL" DATABASE_URL="$DATABASE_URL" \
    LISTEN_ADDR="127.0.0.1:$2" ADMIN_TOKEN="$ADMIN_TOKEN" REDIS_WAIT_REPLICAS="$3" "$BIN/coupon-api"
  wait_ready "http://127.0.0.1:$2" "$1"
}
api "$OUT/api.log" "$API_PORT" 0
API_PID=$BG_PID
api "$OUT/api-wait.log" "$WAIT_PORT" 1
WAIT_PID=$BG_PID
start_bg "$OUT/ceiling.log" env REDIS_URL="$REDIS_URL" LISTEN_ADDR="127.0.0.1:$CEILING_PORT" "$BIN/coupon-ceiling"
CEILING_PID=$BG_PID
for _ in $(seq 50); do grep -q listening "$OUT/ceiling.log" && break; sleep 0.1; done

hot_coupon() { # port quantity -> id
  create_coupon "http://127.0.0.1:$1" hot "$2"
}
ceiling_coupon() { # id quantity
  run redis-cli -p "$REDIS_PORT" HSET "$(ckey "$1" meta)" total_quantity "$2" issue_start_ms 0 \
    issue_end_ms 99999999999999 >/dev/null
}

redis_cpu_us() { rcli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.0f", s * 1e6}'; }
wrk_run() { # label url server_pid
  local s0 r0
  s0=$(cpu_ticks "$3")
  r0=$(redis_cpu_us)
  run wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency -s deploy/bench/wrk-issue.lua "$2" >"$OUT/wrk-$1.txt" 2>&1
  echo "WRK_CPU {\"server_ticks\":$(($(cpu_ticks "$3") - s0)),\"redis_us\":$(($(redis_cpu_us) - r0)),\"clk_tck\":$(getconf CLK_TCK)}" >>"$OUT/wrk-$1.txt"
}
issue_url() { echo "http://127.0.0.1:$1/coupons/$2/issue"; }

log "warm-up: 3 s each"
DURATION=3 wrk_run warmup-api "$(issue_url "$API_PORT" "$(hot_coupon "$API_PORT" "$HUGE")")" "$API_PID"
ceiling_coupon 900000100 "$HUGE"
DURATION=3 wrk_run warmup-ceiling "$(issue_url "$CEILING_PORT" 900000100)" "$CEILING_PID"

for round in $(seq "$ROUNDS"); do
  log "round $round/$ROUNDS: the sale ($QUANTITY units), coupon-api then coupon-ceiling"
  sale=$(hot_coupon "$API_PORT" "$QUANTITY")
  fact "sale_coupon_$round" "$sale"
  ceiling=$((900000100 + round))
  ceiling_coupon "$ceiling" "$QUANTITY"
  wrk_run "sale-api-$round" "$(issue_url "$API_PORT" "$sale")" "$API_PID"
  fact "sale_api_issued_$round" "$(rcli SCARD "$(ckey "$sale" issued)")"
  wrk_run "sale-ceiling-$round" "$(issue_url "$CEILING_PORT" "$ceiling")" "$CEILING_PID"
  fact "sale_ceiling_issued_$round" "$(rcli SCARD "$(ckey "$ceiling" issued)")"
  log "round $round/$ROUNDS: sold out, coupon-api then coupon-ceiling"
  wrk_run "soldout-api-$round" "$(issue_url "$API_PORT" "$sale")" "$API_PID"
  wrk_run "soldout-ceiling-$round" "$(issue_url "$CEILING_PORT" "$ceiling")" "$CEILING_PID"
  wrk_run "soldout-floor-$round" "http://127.0.0.1:$CEILING_PORT/trivial/coupons/$ceiling/issue" "$CEILING_PID"
  log "round $round/$ROUNDS: every request accepted, REDIS_WAIT_REPLICAS=0 then 1; the sale with 1"
  wrk_run "accept-api-$round" "$(issue_url "$API_PORT" "$(hot_coupon "$API_PORT" "$HUGE")")" "$API_PID"
  wrk_run "accept-wait-$round" "$(issue_url "$WAIT_PORT" "$(hot_coupon "$WAIT_PORT" "$HUGE")")" "$WAIT_PID"
  wait_sale=$(hot_coupon "$WAIT_PORT" "$QUANTITY")
  wrk_run "sale-wait-$round" "$(issue_url "$WAIT_PORT" "$wait_sale")" "$WAIT_PID"
  fact "sale_wait_issued_$round" "$(rcli SCARD "$(ckey "$wait_sale" issued)")"
done
fact replica_link "$(redis-cli -p "$REPLICA_PORT" INFO replication | tr -d '\r' | grep master_link_status)"
fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 deploy/bench/hot_summary.py "$OUT" --append "$BENCHMARKS_MD"
log "raw results in $OUT; section appended to $BENCHMARKS_MD"
