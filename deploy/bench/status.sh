#!/usr/bin/env bash
# The status benchmark (issue 14, part 3): "did I get it?" polls after a sale,
# against the Redis-only coupon read, in one run on one machine.
#
#  1. A $SALE_USERS-user sale for $SALE_USERS coupons (coupon-bench, every user
#     accepted), drained to MySQL by one consumer (coupon-bench waits for it).
#  2. Alternated, $ROUNDS rounds each, wrk -t1 -c$CONNECTIONS -d$DURATION:
#     A = GET /coupons/{id}/issues/{random sold user} (the status poll),
#     B = GET /coupons/{id} (Redis only: the ceiling of a read on this API).
#     During each run: mariadbd's, coupon-api's and Redis' CPU from /proc.
#  3. One long-poll round: every poll with ?wait=5 after the sale (each answers
#     at once: every status is final), for the long-poll path's cost.
#
# Targets: median status rps >= 0.8 x median GET /coupons/{id} rps; mariadbd
# CPU per status poll <= 2 us. MariaDB is a PRIVATE mariadbd (port
# $MYSQL_PORT, its own data directory), so other work on the machine's MariaDB
# does not count against the polls; Redis a private redis-server. Everything
# is stopped by PID on exit. Appends a dated section to BENCHMARKS.md.
#
#   deploy/bench/status.sh              # about 2 minutes on 2 cores
#   ROUNDS=5 DURATION=20 deploy/bench/status.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

REDIS_PORT=${REDIS_PORT:-6394}
MYSQL_PORT=${MYSQL_PORT:-3317}
API_PORT=${API_PORT:-8095}
CONSUMER_METRICS_PORT=${CONSUMER_METRICS_PORT:-9490}
DB_NAME=${DB_NAME:-coupon_bench_status}
SALE_USERS=${SALE_USERS:-20000}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
BENCHMARKS_MD=${BENCHMARKS_MD:-BENCHMARKS.md}
OUT=${OUT:-.run/bench/status-$(date -u +%Y%m%dT%H%M%SZ)}
ADMIN_TOKEN=bench-admin-token
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
DATABASE_URL=mysql://root@127.0.0.1:$MYSQL_PORT/$DB_NAME
API_URL=http://127.0.0.1:$API_PORT
BIN=./target/release

source deploy/bench/lib.sh
open_results status

for tool in redis-server redis-cli mariadbd mariadb-install-db mariadb curl jq python3 ss wrk; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done
for port in "$REDIS_PORT" "$MYSQL_PORT" "$API_PORT" $((CONSUMER_METRICS_PORT + 1)); do
  port_free "$port" || die "port $port is taken"
done
[ "$REDIS_PORT" != 6379 ] || die "REDIS_PORT must not be the machine's Redis (6379)"
[ "$MYSQL_PORT" != 3306 ] || die "MYSQL_PORT must not be the machine's MariaDB (3306)"

fact date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
fact settings "SALE_USERS=$SALE_USERS CONNECTIONS=$CONNECTIONS DURATION=$DURATION ROUNDS=$ROUNDS"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"
log "building (release)"
run cargo build --release --quiet -p api -p consumer -p coupon-bench

# ------------------------------------------------------- private servers ---
REDIS_DIR=$(mktemp -d /tmp/coupon-bench-status.XXXXXX)
log "private redis-server on $REDIS_PORT, private mariadbd on $MYSQL_PORT (in $REDIS_DIR)"
start_bg /dev/null redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --appendonly yes \
  --appendfsync everysec --maxmemory-policy noeviction --save "" --logfile "$OUT/redis.log"
REDIS_PID=$BG_PID
mkdir -p "$REDIS_DIR/tmp"
TMPDIR=$REDIS_DIR/tmp run mariadb-install-db --no-defaults --datadir="$REDIS_DIR/data" \
  --auth-root-authentication-method=normal --skip-test-db --user=root >"$OUT/mariadb-install.log" 2>&1
start_bg "$OUT/mariadbd.out" mariadbd --no-defaults --datadir="$REDIS_DIR/data" --port="$MYSQL_PORT" \
  --bind-address=127.0.0.1 --socket="$REDIS_DIR/mysqld.sock" --pid-file="$REDIS_DIR/mysqld.pid" \
  --log-error="$OUT/mariadbd.log" --innodb-buffer-pool-size=256M --skip-log-bin --user=root \
  --tmpdir="$REDIS_DIR/tmp"
MYSQLD_PID=$BG_PID
msql() { mariadb -h 127.0.0.1 -P "$MYSQL_PORT" -uroot -N -B "$@"; }
for _ in $(seq 100); do msql -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
msql -e 'SELECT 1' >/dev/null || die "the private mariadbd did not start (see $OUT/mariadbd.log)"
for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
fact redis_version "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
fact mariadb_version "$(msql -e 'SELECT VERSION()')"
fact load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
fact nproc "$(nproc)"
fact cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
fact kernel "$(uname -r)"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || commit="$commit+dirty"
fact commit "$commit"

log "coupon-api on $API_URL (RUST_LOG=info) and one consumer"
start_bg "$OUT/api.log" env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=info REDIS_URL="$REDIS_URL" \
  DATABASE_URL="$DATABASE_URL" LISTEN_ADDR="127.0.0.1:$API_PORT" ADMIN_TOKEN="$ADMIN_TOKEN" "$BIN/coupon-api"
API_PID=$BG_PID
wait_ready "$API_URL" "$OUT/api.log"
start_bg "$OUT/consumer.log" env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=info REDIS_URL="$REDIS_URL" \
  DATABASE_URL="$DATABASE_URL" CONSUMER_NAME=bench-status METRICS_ADDR="127.0.0.1:$((CONSUMER_METRICS_PORT + 1))" \
  "$BIN/coupon-consumer"

# ------------------------------------------------------------- the sale ---
COUPON=$(create_coupon "$API_URL" "status bench" "$SALE_USERS")
record "curl -X POST $API_URL/coupons -d '{\"total_quantity\":$SALE_USERS,...}'   # -> coupon $COUPON"
log "(1) the sale: $SALE_USERS users for coupon $COUPON, then drained to MySQL"
run "$BIN/coupon-bench" --api-url "$API_URL" --coupon "$COUPON" --users "$SALE_USERS" --user-offset 1 \
  --concurrency "$CONNECTIONS" --database-url "$DATABASE_URL" --json "$OUT/sale.json" >"$OUT/sale.txt" 2>&1 ||
  die "the sale failed its checks (see $OUT/sale.txt)"
fact sale_rows "$(msql "$DB_NAME" -e "SELECT COUNT(*) FROM coupon_issues WHERE coupon_id = $COUPON")"
fact sample_status "$(curl -fsS "$API_URL/coupons/$COUPON/issues/1" | tr -d '\n')"
fact redis_issued_at_records "$(rcli HLEN "coupon:{p$((COUPON % 16))}:$COUPON:issued-at")"

# ----------------------------------------------------- polls, A B A B ------
wrk_run() { # label url [STATUS_USERS [STATUS_QUERY]]: wrk, with mariadbd's, the API's and Redis' CPU ticks over the run
  local m0 a0 r0
  m0=$(cpu_ticks "$MYSQLD_PID") a0=$(cpu_ticks "$API_PID") r0=$(cpu_ticks "$REDIS_PID")
  run env STATUS_USERS="${3:-}" STATUS_QUERY="${4:-}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION"s --latency -s deploy/bench/wrk-get.lua "$2" \
    >"$OUT/wrk-$1.txt" 2>&1
  echo "WRK_CPU {\"mysqld_ticks\":$(($(cpu_ticks "$MYSQLD_PID") - m0)),\"api_ticks\":$(($(cpu_ticks "$API_PID") - a0)),\"redis_ticks\":$(($(cpu_ticks "$REDIS_PID") - r0)),\"clk_tck\":$(getconf CLK_TCK)}" >>"$OUT/wrk-$1.txt"
}
STATUS_URL=$API_URL/coupons/$COUPON/issues/
COUPON_URL=$API_URL/coupons/$COUPON
log "(2) warm-up: 3 s each"
DURATION_SAVED=$DURATION DURATION=3
wrk_run warmup-status "$STATUS_URL" "$SALE_USERS"
wrk_run warmup-coupon "$COUPON_URL"
DURATION=$DURATION_SAVED
for round in $(seq "$ROUNDS"); do
  log "(2) round $round/$ROUNDS: A = status polls, B = GET /coupons/$COUPON (wrk -t1 -c$CONNECTIONS -d${DURATION}s)"
  wrk_run "status-$round" "$STATUS_URL" "$SALE_USERS"
  wrk_run "coupon-$round" "$COUPON_URL"
done
log "(3) long-polls (?wait=5) after the sale"
wrk_run longpoll "$STATUS_URL" "$SALE_USERS" "?wait=5"
fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"

python3 deploy/bench/status_summary.py "$OUT" --append "$BENCHMARKS_MD"
