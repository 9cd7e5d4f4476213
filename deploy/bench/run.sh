#!/usr/bin/env bash
# The benchmark: coupon-rush against its own best case, on one machine, in one run.
#
#  (a) ceiling, Redis: redis-benchmark running lua/issue.lua by EVALSHA (same key
#      shapes, random users), -c $CONNECTIONS.
#  (b) ceiling, HTTP: wrk against coupon-ceiling (B: a minimal axum handler that
#      runs that one EVALSHA on a shared multiplexed connection) and coupon-api
#      (A: tracing on at RUST_LOG=info, no OTLP exporter, metrics on), alternated
#      A B A B ... ($ROUNDS rounds each, medians), same connections and duration;
#      coupon-api's resident memory sampled under load; then coupon-bench against
#      coupon-api for its latency percentiles.
#  (c) drain: $DRAIN_USERS users accepted through the API with no consumer
#      running, then drained to MySQL by 1, then (a fresh coupon) 2 consumers,
#      rows/s; against the same rows loaded by plain batched INSERT + UPDATE
#      transactions (coupon-insert-ceiling, before, between and after, and once
#      with the consumer's own statements for context); the INSERT
#      statements the consumers issued (their transactions, and MariaDB's global
#      Com_insert) against the rows.
#  (d) Redis memory per accepted user: the issued SET, the stream before and
#      after the consumers trimmed it.
#  (e) a $SALE_USERS-user sale for $SALE_QUANTITY coupons end to end (accept ->
#      MySQL) with 2 consumers and coupon-bench's verification.
#
# Prints the summary with ratios (ours / best case) against the targets and
# appends a dated section (machine, load, commit, exact commands) to
# BENCHMARKS.md, keeping the earlier ones. Everything it starts (a PRIVATE
# redis-server on $REDIS_PORT in a temp dir, coupon-api, coupon-ceiling,
# consumers) is stopped by PID on exit. It uses the machine's MariaDB on
# 127.0.0.1:3306 with its own database $DB_NAME, dropped and recreated at the
# start. Never the machine's Redis on 6379. Not a test: run it by hand.
#
#   deploy/bench/run.sh                 # about 3-5 minutes on 2 cores
#   ROUNDS=3 DURATION=10 SALE_USERS=1000000 PROFILE=auto deploy/bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# Key names of the partitioned layout (shared/src/keys.rs): coupon c lives in
# partition c mod STREAM_PARTITIONS, under that partition's hash tag.
PARTITIONS=${STREAM_PARTITIONS:-16}
ckey() { echo "coupon:{p$(( $1 % PARTITIONS ))}:$1:$2"; }
pstream() { echo "events:{p$(( $1 % PARTITIONS ))}"; }

REDIS_PORT=${REDIS_PORT:-6390}
API_PORT=${API_PORT:-8090}
CEILING_PORT=${CEILING_PORT:-8091}
CONSUMER_METRICS_PORT=${CONSUMER_METRICS_PORT:-9470}
DB_NAME=${DB_NAME:-coupon_bench}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
RB_REQUESTS=${RB_REQUESTS:-500000}
DRAIN_USERS=${DRAIN_USERS:-100000}
BATCH=${BATCH:-256}
SALE_USERS=${SALE_USERS:-1000000}
SALE_QUANTITY=${SALE_QUANTITY:-100000}
SALE_CONCURRENCY=${SALE_CONCURRENCY:-128}
PROFILE=${PROFILE:-auto} # auto: perf when a target is missed; 1: always; 0: never
# dwarf: call graphs good enough for inclusive time per function (Rust release
# builds have no frame pointers); fp: plain `perf record -g`.
PERF_CALLGRAPH=${PERF_CALLGRAPH:-dwarf}
BENCHMARKS_MD=${BENCHMARKS_MD:-BENCHMARKS.md}
OUT=${OUT:-.run/bench/$(date -u +%Y%m%dT%H%M%SZ)}

ADMIN_TOKEN=bench-admin-token
DATABASE_URL=mysql://root@127.0.0.1:3306/$DB_NAME
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
API_URL=http://127.0.0.1:$API_PORT
CEILING_URL=http://127.0.0.1:$CEILING_PORT
# Coupon ids for the ceilings' Redis-only coupons: far above MySQL's ids, so no
# consumer ever reads them.
CEILING_COUPON=900000001
RB_COUPON=900000002
BIN=./target/release

source deploy/bench/lib.sh
open_results bench

# ------------------------------------------------------------ preparation ---
for tool in redis-server redis-cli redis-benchmark mariadb curl jq python3 ss; do
  command -v "$tool" >/dev/null || die "$tool is missing (deploy/local/services.sh installs Redis and MariaDB)"
done
ensure_wrk
for port in "$REDIS_PORT" "$API_PORT" "$CEILING_PORT" $((CONSUMER_METRICS_PORT + 1)) $((CONSUMER_METRICS_PORT + 2)); do
  port_free "$port" || die "port $port is taken (set REDIS_PORT, API_PORT, CEILING_PORT or CONSUMER_METRICS_PORT)"
done
check_servers

fact date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
record_machine
fact ram "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
fact wrk_version "$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
fact settings "CONNECTIONS=$CONNECTIONS DURATION=$DURATION ROUNDS=$ROUNDS RB_REQUESTS=$RB_REQUESTS DRAIN_USERS=$DRAIN_USERS BATCH=$BATCH SALE_USERS=$SALE_USERS SALE_QUANTITY=$SALE_QUANTITY SALE_CONCURRENCY=$SALE_CONCURRENCY"
log "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"

log "building (release)"
run cargo build --release --quiet -p api -p consumer -p coupon-bench

log "private redis-server on 127.0.0.1:$REDIS_PORT"
REDIS_DIR=$(mktemp -d /tmp/coupon-bench-redis.XXXXXX)
start_bg /dev/null redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --appendonly yes \
  --appendfsync everysec --maxmemory-policy noeviction --save "" --logfile "$OUT/redis.log"
REDIS_PID=$BG_PID
for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
rcli ping >/dev/null || die "redis-server did not start (see $OUT/redis.log)"
rcli flushall >/dev/null

log "MariaDB database $DB_NAME (dropped and recreated)"
record "mariadb -h 127.0.0.1 -uroot -e 'DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME'"
sql -e "DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME"

log "coupon-api on $API_URL (RUST_LOG=info, no OTLP exporter) and coupon-ceiling on $CEILING_URL"
start_bg "$OUT/api.log" env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=info REDIS_URL="$REDIS_URL" \
  DATABASE_URL="$DATABASE_URL" LISTEN_ADDR="127.0.0.1:$API_PORT" ADMIN_TOKEN="$ADMIN_TOKEN" "$BIN/coupon-api"
API_PID=$BG_PID
start_bg "$OUT/ceiling.log" env REDIS_URL="$REDIS_URL" LISTEN_ADDR="127.0.0.1:$CEILING_PORT" "$BIN/coupon-ceiling"
CEILING_PID=$BG_PID
wait_ready "$API_URL" "$OUT/api.log"
for _ in $(seq 50); do grep -q listening "$OUT/ceiling.log" && break; sleep 0.1; done
event_bytes=$(sed -n 's/.*event payload \([0-9]*\) bytes.*/\1/p' "$OUT/ceiling.log")
[ -n "$event_bytes" ] || die "coupon-ceiling did not start (see $OUT/ceiling.log)"

# A coupon of coupon-api's own, open for a day, so big that every request is accepted.
HUGE=1000000000000
API_COUPON=$(create_coupon "$API_URL" "bench http" "$HUGE")
record "curl -X POST $API_URL/coupons -H 'Authorization: Bearer ...' -d '{\"name\":\"bench http\",\"total_quantity\":$HUGE,...}'   # -> coupon $API_COUPON"
run redis-cli -p "$REDIS_PORT" HSET "$(ckey "$CEILING_COUPON" meta)" total_quantity "$HUGE" issue_start_ms 0 issue_end_ms 99999999999999 >/dev/null
run redis-cli -p "$REDIS_PORT" HSET "$(ckey "$RB_COUPON" meta)" total_quantity "$HUGE" issue_start_ms 0 issue_end_ms 99999999999999 >/dev/null

# ------------------------------------------------- (a) redis-benchmark ------
log "(a) redis-benchmark: EVALSHA issue.lua, -c $CONNECTIONS, -n $RB_REQUESTS, random users"
sha=$(rcli -x SCRIPT LOAD <lua/issue.lua)
[ "$sha" = "$(sha1sum lua/issue.lua | cut -d' ' -f1)" ] || die "the loaded script's SHA is not lua/issue.lua's"
payload=$(head -c "$event_bytes" /dev/zero | tr '\0' 'e')
run redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c "$CONNECTIONS" -n "$RB_REQUESTS" -r 1000000000 --csv \
  EVALSHA "$sha" 3 "$(ckey "$RB_COUPON" issued)" "$(pstream "$RB_COUPON")" "$(ckey "$RB_COUPON" meta)" \
  __rand_int__ "$payload" >"$OUT/redis-benchmark.csv"
fact rb_accepted "$(rcli SCARD "$(ckey "$RB_COUPON" issued)")"
rcli UNLINK "$(ckey "$RB_COUPON" issued)" "$(pstream "$RB_COUPON")" >/dev/null

# ---------------------------------------------------- (b) HTTP, A B A B -----
# Samples a process's resident memory (KiB) every 0.25 s into a file until killed.
sample_rss() { while kill -0 "$1" 2>/dev/null; do ps -o rss= -p "$1" >>"$2" 2>/dev/null || true; sleep 0.25; done; }
max_of() { sort -n "$1" | tail -1; }
wrk_run() { # label url duration [server pid]: also the server's and Redis's CPU ticks during the run
  local s0 r0
  s0=$(cpu_ticks "${4:-$$}")
  r0=$(cpu_ticks "$REDIS_PID")
  run wrk -t1 -c"$CONNECTIONS" -d"$3"s --latency -s deploy/bench/wrk-issue.lua "$2" >"$OUT/wrk-$1.txt" 2>&1
  if [ -n "${4:-}" ]; then
    echo "WRK_CPU {\"server_ticks\":$(($(cpu_ticks "$4") - s0)),\"redis_ticks\":$(($(cpu_ticks "$REDIS_PID") - r0)),\"clk_tck\":$(getconf CLK_TCK)}" >>"$OUT/wrk-$1.txt"
  fi
}
API_ISSUE=$API_URL/coupons/$API_COUPON/issue
CEILING_ISSUE=$CEILING_URL/coupons/$CEILING_COUPON/issue
log "(b) warm-up: 3 s each"
wrk_run warmup-api "$API_ISSUE" 3
wrk_run warmup-ceiling "$CEILING_ISSUE" 3
fact api_rss_idle_kib "$(ps -o rss= -p "$API_PID" | tr -d ' ')"
for round in $(seq "$ROUNDS"); do
  log "(b) round $round/$ROUNDS: A = coupon-api, then B = coupon-ceiling (wrk -t1 -c$CONNECTIONS -d${DURATION}s)"
  sample_rss "$API_PID" "$OUT/rss-api-load.txt" &
  sampler=$!
  wrk_run "api-$round" "$API_ISSUE" "$DURATION" "$API_PID"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  wrk_run "ceiling-$round" "$CEILING_ISSUE" "$DURATION" "$CEILING_PID"
done
fact api_rss_load_max_kib "$(max_of "$OUT/rss-api-load.txt")"
fact api_rss_after_kib "$(ps -o rss= -p "$API_PID" | tr -d ' ')"

log "(b) coupon-bench against coupon-api: -c $CONNECTIONS for ${DURATION}s"
run "$BIN/coupon-bench" --api-url "$API_URL" --coupon "$API_COUPON" --users 1000000 --concurrency "$CONNECTIONS" \
  --duration "$DURATION" --no-verify --json "$OUT/bench-api.json" >"$OUT/bench-api.txt" 2>&1 || true

# The HTTP coupons are done: end the API coupon's period (so consumers never read
# it) and drop both coupons' big sets and streams.
sql "$DB_NAME" -e "UPDATE coupons SET issue_start = NOW(3) - INTERVAL 3 DAY, issue_end = NOW(3) - INTERVAL 2 DAY WHERE id = $API_COUPON"
for c in "$API_COUPON" "$CEILING_COUPON"; do rcli UNLINK "$(ckey "$c" issued)" "$(pstream "$c")" >/dev/null; done

# --------------------------------------------------- (c, d) the drain -------
start_consumers() { # count tag
  local i
  CONSUMER_PIDS=()
  for i in $(seq "$1"); do
    start_bg "$OUT/consumer-$2-$i.log" env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=info REDIS_URL="$REDIS_URL" \
      DATABASE_URL="$DATABASE_URL" BATCH_SIZE="$BATCH" CONSUMER_NAME="bench-$2-$i" \
      METRICS_ADDR="127.0.0.1:$((CONSUMER_METRICS_PORT + i))" "$BIN/coupon-consumer"
    CONSUMER_PIDS+=("$BG_PID")
  done
}
stop_consumers() { local pid; for pid in "${CONSUMER_PIDS[@]}"; do stop_pid "$pid"; done; CONSUMER_PIDS=(); }
# The consumers' write transactions so far (each is at most one INSERT).
consumer_transactions() {
  local i total=0 n
  for i in $(seq "$1"); do
    n=$(curl -fsS "http://127.0.0.1:$((CONSUMER_METRICS_PORT + i))/metrics" |
      awk '/^coupon_consumer_mysql_write_duration_seconds_count/ {s += $2} END {print s + 0}')
    total=$((total + ${n%.*}))
  done
  echo "$total"
}
com_insert() { sql -e "SHOW GLOBAL STATUS LIKE 'Com_insert'" | awk '{print $2}'; }
rows_of() { sql "$DB_NAME" -e "SELECT COUNT(*) FROM coupon_issues WHERE coupon_id = $1"; }
# What the drain polls: a primary-key read. The consumers raise issued_quantity
# in the transaction that inserts the rows, so it is the row count at every
# commit; a COUNT(*) of up to 100,000 rows ten times a second would take CPU
# from the consumers (two cores) and slow what it measures.
issued_of() { sql "$DB_NAME" -e "SELECT issued_quantity FROM coupons WHERE id = $1"; }
# MariaDB's server process, only to read its CPU time (it is not ours to stop).
MYSQLD_PID=$(pgrep -x mariadbd | head -1 || true)
[ -n "$MYSQLD_PID" ] || MYSQLD_PID=$(pgrep -x mysqld | head -1 || true)
# Microseconds of CPU per row from a tick count.
per_row() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n }'; }
memory_of() { rcli MEMORY USAGE "$1" SAMPLES 0; }

insert_ceiling() { # tag [--consumer-sql]
  log "(c) insert ceiling ($1): $DRAIN_USERS rows, batches of $BATCH ${2:-}"
  local m0 m1
  m0=$(cpu_ticks "${MYSQLD_PID:-$$}")
  run "$BIN/coupon-insert-ceiling" --database-url "$DATABASE_URL" --rows "$DRAIN_USERS" --batch "$BATCH" \
    --json "$OUT/insert-ceiling-$1.json" ${2:+"$2"}
  m1=$(cpu_ticks "${MYSQLD_PID:-$$}")
  [ -z "$MYSQLD_PID" ] || fact "ceiling_$1_mysqld_cpu_us_per_row" "$(per_row $((m1 - m0)) "$DRAIN_USERS")"
}

drain() { # consumers
  local k=$1 coupon accepted before_ins t_start t0="" rows0=0 t1="" n t started=$SECONDS m0 r0 c=0 pid
  log "(c) drain with $k consumer(s): accepting $DRAIN_USERS users through coupon-api, no consumer running"
  run "$BIN/coupon-bench" --api-url "$API_URL" --admin-token "$ADMIN_TOKEN" --users "$DRAIN_USERS" \
    --quantity "$DRAIN_USERS" --concurrency "$CONNECTIONS" --no-verify --json "$OUT/accept-$k.json" \
    >"$OUT/accept-$k.txt" 2>&1 || die "accepting users failed (see $OUT/accept-$k.txt)"
  coupon=$(jq -r '.coupons[0].id' "$OUT/accept-$k.json")
  accepted=$(jq -r '.coupons[0].accepted' "$OUT/accept-$k.json")
  fact "drain${k}_coupon" "$coupon"
  fact "drain${k}_accepted" "$accepted"
  fact "drain${k}_accept_rps" "$(jq -r .throughput_rps "$OUT/accept-$k.json")"
  if [ "$k" = 1 ]; then
    fact mem_set_bytes "$(memory_of "$(ckey "$coupon" issued)")"
    fact mem_set_encoding "$(rcli OBJECT ENCODING "$(ckey "$coupon" issued)")"
    fact mem_set_card "$(rcli SCARD "$(ckey "$coupon" issued)")"
    fact mem_stream_before_bytes "$(memory_of "$(pstream "$coupon")")"
    fact mem_stream_before_len "$(rcli XLEN "$(pstream "$coupon")")"
  fi
  before_ins=$(com_insert)
  record "# then: start $k coupon-consumer(s) as below and poll SELECT issued_quantity FROM coupons WHERE id = $coupon every 0.1 s"
  m0=$(cpu_ticks "${MYSQLD_PID:-$$}")
  r0=$(cpu_ticks "$REDIS_PID")
  t_start=$(now)
  start_consumers "$k" "c$k"
  while :; do
    n=$(issued_of "$coupon")
    t=$(now)
    if [ -z "$t0" ] && [ "$n" -gt 0 ]; then t0=$t; rows0=$n; fi
    if [ "$n" -ge "$accepted" ]; then t1=$t; break; fi
    if ((SECONDS - started > 300)); then die "drain with $k consumer(s) did not finish in 300 s ($n/$accepted rows)"; fi
    sleep 0.1
  done
  for pid in "${CONSUMER_PIDS[@]}"; do c=$((c + $(cpu_ticks "$pid"))); done
  fact "drain${k}_consumer_cpu_us_per_row" "$(per_row "$c" "$accepted")"
  [ -z "$MYSQLD_PID" ] || fact "drain${k}_mysqld_cpu_us_per_row" "$(per_row $(($(cpu_ticks "$MYSQLD_PID") - m0)) "$accepted")"
  fact "drain${k}_redis_cpu_us_per_row" "$(per_row $(($(cpu_ticks "$REDIS_PID") - r0)) "$accepted")"
  fact "drain${k}_com_insert" "$(($(com_insert) - before_ins))"
  fact "drain${k}_count" "$(rows_of "$coupon")"
  fact "drain${k}_transactions" "$(consumer_transactions "$k")"
  fact "drain${k}_rows" "$n"
  fact "drain${k}_rows_at_first_seen" "$rows0"
  fact "drain${k}_t_start" "$t_start"
  fact "drain${k}_t_first" "$t0"
  fact "drain${k}_t_done" "$t1"
  fact "drain${k}_issued_span_s" "$(sql "$DB_NAME" -e "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(issued_at), MAX(issued_at)) / 1e6 FROM coupon_issues WHERE coupon_id = $coupon")"
  fact "drain${k}_issued_quantity" "$(sql "$DB_NAME" -e "SELECT issued_quantity FROM coupons WHERE id = $coupon")"
  if [ "$k" = 1 ]; then
    log "(d) waiting 6 s for the consumer's stream trim (every 5 s)"
    sleep 6
    fact mem_stream_after_bytes "$(memory_of "$(pstream "$coupon")")"
    fact mem_stream_after_len "$(rcli XLEN "$(pstream "$coupon")")"
    fact mem_set_after_bytes "$(memory_of "$(ckey "$coupon" issued)")"
  fi
  stop_consumers
}

# Interleaved (ceiling, 1 consumer, ceiling, 2 consumers, ceiling): MariaDB's
# commit latency drifts with the machine's disk load; the ratio uses the median.
insert_ceiling before
drain 1
insert_ceiling between
drain 2
insert_ceiling after
# Context: the consumer's own statements, without Redis and the consumer process.
insert_ceiling consumer-sql --consumer-sql

# ----------------------------------------------- (e) the 1M-user sale -------
log "(e) sale: $SALE_USERS users for $SALE_QUANTITY coupons, -c $SALE_CONCURRENCY, 2 consumers, verified"
start_consumers 2 sale
sample_rss "$API_PID" "$OUT/rss-api-sale.txt" &
sampler=$!
sale_status=0
run "$BIN/coupon-bench" --api-url "$API_URL" --admin-token "$ADMIN_TOKEN" --users "$SALE_USERS" \
  --quantity "$SALE_QUANTITY" --concurrency "$SALE_CONCURRENCY" --database-url "$DATABASE_URL" \
  --drain-timeout 300 --json "$OUT/sale.json" >"$OUT/sale.txt" 2>&1 || sale_status=$?
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
fact sale_exit "$sale_status"
fact api_rss_sale_max_kib "$(max_of "$OUT/rss-api-sale.txt")"
fact api_rss_sale_first_kib "$(head -1 "$OUT/rss-api-sale.txt" | tr -d ' ')"
fact api_rss_sale_last_kib "$(tail -1 "$OUT/rss-api-sale.txt" | tr -d ' ')"
stop_consumers

# ------------------------------------------------------- profile, summary ---
profile() { # label pid url
  local graph=(-g)
  if [ "$PERF_CALLGRAPH" = dwarf ]; then graph=(--call-graph dwarf,16384); fi
  log "profile: perf record -F 999 ${graph[*]} on $1 (pid $2) under wrk for ${DURATION}s"
  start_bg "$OUT/perf-$1.log" perf record -F 999 "${graph[@]}" -e cpu-clock -p "$2" -o "$OUT/perf-$1.data" -- sleep "$DURATION"
  local perf_pid=$BG_PID
  sleep 0.5
  wrk_run "profile-$1" "$3" "$DURATION"
  wait "$perf_pid" || true
  stop_pid "$perf_pid"
  local clean='s/([[:space:]]+-)+[[:space:]]*$//; s/[[:space:]]+$//'
  perf report -i "$OUT/perf-$1.data" --no-children -g none --sort symbol --percent-limit 0.4 --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | sed -E "$clean" | head -40 >"$OUT/perf-$1.txt" || true
  perf report -i "$OUT/perf-$1.data" --no-children -g none --sort dso --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+$//' | head -12 >"$OUT/perf-$1-dso.txt" || true
  if [ "$PERF_CALLGRAPH" = dwarf ]; then
    # Inclusive time of the frames that tell where a request's CPU goes.
    perf report -i "$OUT/perf-$1.data" --children --no-inline -g none --sort symbol --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | sed -E "$clean" |
      grep -v drop_in_place | grep -E 'from_fn::FromFn<.*>::call::\{\{closure|api::|coupon_ceiling::|Layered<L,S> as tracing_core::subscriber::Subscriber>::(new_span|try_close|record)|fmt_layer::Layer<S,N,E,W> as tracing_subscriber::layer::Layer<S>>::on_|PrometheusRecorder as metrics::recorder::Recorder>::register|tokio::time::timeout::Timeout<T> as|IssueEvent::encode|serde_json::de::from_trait|ScriptInvocation::eval_cmd|hyper::proto::h1::role::Server as hyper::proto::h1::Http1Transaction>::(parse|encode)|ConnectionManager as redis::aio::ConnectionLike>::req_packed_command' |
      head -30 >"$OUT/perf-$1-inclusive.txt" || true
  fi
}
fact load_before_summary "$(cut -d' ' -f1-3 /proc/loadavg)"
run_profile=0
if [ "$PROFILE" = 1 ]; then run_profile=1; fi
if [ "$PROFILE" = auto ] && ! python3 deploy/bench/summarize.py "$OUT" --check-http; then run_profile=1; fi
if [ "$run_profile" = 1 ]; then
  # The API coupon's period ended in MySQL only (for the consumers, none runs
  # now); coupon-api decides from its cache and Redis, where it is still open.
  profile api "$API_PID" "$API_ISSUE"
  profile ceiling "$CEILING_PID" "$CEILING_ISSUE"
fi
fact load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 deploy/bench/summarize.py "$OUT" --append "$BENCHMARKS_MD"
log "raw results in $OUT; section appended to $BENCHMARKS_MD"
