#!/usr/bin/env bash
# Scale-out figures on Redis Cluster: how fast one hot coupon (one shard, one
# Redis core) can go, and how throughput grows with coupons spread over three
# shards. Starts a private 3-master cluster on free ports (never touches the
# machine's Redis), measures the issue script with redis-benchmark, then
# coupon-api end to end with coupon-bench. Prints a table; appends it to
# BENCHMARKS.md with BENCH_RECORD=1.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Key names of the partitioned layout (shared/src/keys.rs): coupon c lives in
# partition c mod STREAM_PARTITIONS, under that partition's hash tag.
PARTITIONS=${STREAM_PARTITIONS:-16}
ckey() { echo "coupon:{p$(( $1 % PARTITIONS ))}:$1:$2"; }
pstream() { echo "events:{p$(( $1 % PARTITIONS ))}"; }
DURATION_REQS=${DURATION_REQS:-200000}
CONNS=${CONNS:-64}
work=$(mktemp -d /tmp/coupon-cluster-bench.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release -q -p api -p consumer -p coupon-bench
# Below 55535: a cluster node also listens on its port + 10000.
free_port() { python3 -c 'import random, socket
while True:
    p = random.randint(20000, 55000); s = socket.socket()
    try: s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass'; }
ports=(); for i in 1 2 3; do ports+=($(free_port)); done
for p in "${ports[@]}"; do
  mkdir -p "$work/$p"
  redis-server --port "$p" --bind 127.0.0.1 --dir "$work/$p" --cluster-enabled yes --cluster-config-file nodes.conf \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction --save "" --daemonize no >"$work/$p.log" 2>&1 &
  pids+=($!)
done
for p in "${ports[@]}"; do for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-yes >/dev/null
for _ in $(seq 100); do redis-cli -p "${ports[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done

sha=$(redis-cli -p "${ports[0]}" script load "$(cat lua/issue.lua)")
for p in "${ports[@]}"; do redis-cli -p "$p" script load "$(cat lua/issue.lua)" >/dev/null; done
# Three coupon ids whose hash tags land on three different masters.
declare -A owner; coupons=()
for id in $(seq 1 200); do
  slot=$(redis-cli -p "${ports[0]}" cluster keyslot "$(pstream "$id")")
  node=$(redis-cli -p "${ports[0]}" cluster nodes | awk -v s="$slot" '$3 ~ /master/ { for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]; if (s >= r[1] && s <= r[2]) print $2 } }' | cut -d@ -f1)
  if [ -z "${owner[$node]:-}" ]; then owner[$node]=$id; coupons+=("$id:${node##*:}"); fi
  [ ${#coupons[@]} -eq 3 ] && break
done

script_rps() { # id port -> requests/s of the issue script on that coupon's shard
  local id=$1 port=$2
  redis-cli -p "$port" hset "$(ckey "$id" meta)" total_quantity 1000000000000 issue_start_ms 0 issue_end_ms 99999999999999 >/dev/null
  redis-benchmark -p "$port" -c "$CONNS" -n "$DURATION_REQS" -r 1000000000 -q \
    evalsha "$sha" 3 "$(ckey "$id" issued)" "$(pstream "$id")" "$(ckey "$id" meta)" __rand_int__ payload \
    | tr '\r' '\n' | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1
  redis-cli -p "$port" del "$(ckey "$id" issued)" "$(pstream "$id")" >/dev/null
}
first=${coupons[0]}
one=$(script_rps "${first%%:*}" "${first##*:}")
tmp=$(mktemp); jobs_=()
for c in "${coupons[@]}"; do script_rps "${c%%:*}" "${c##*:}" >>"$tmp" & jobs_+=($!); done
wait "${jobs_[@]}"  # not a bare wait: the redis-servers are children too
three=$(awk '{ s += $1 } END { printf "%.0f", s }' "$tmp"); rm -f "$tmp"

# End to end: coupon-api on the cluster, one coupon vs three.
seeds=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}"); seeds=${seeds%,}
db=coupon_cluster_bench
mysql_cli() { if command -v mariadb >/dev/null; then mariadb "$@"; else mysql "$@"; fi; }
mysql_cli -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $db"
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REDIS_CLUSTER_URLS=$seeds DATABASE_URL=mysql://root@127.0.0.1:3306/$db LISTEN_ADDR=127.0.0.1:$api_port ADMIN_TOKEN=bench RUST_LOG=warn \
  ./target/release/coupon-api >"$work/api.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$api_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
http_rps() { # number of coupons -> requests/s through coupon-api
  ./target/release/coupon-bench --api-url "http://127.0.0.1:$api_port" --admin-token bench --create-coupons "$1" \
    --quantity 10000000 --users $((60000 / $1)) --concurrency "$CONNS" --no-verify --json "$work/b$1.json" >/dev/null 2>&1 || true
  python3 -c "import json; print(round(json.load(open('$work/b$1.json'))['throughput_rps']))"
}
api_one=$(http_rps 1); api_three=$(http_rps 3)
mysql_cli -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $db"

table=$(cat <<EOT
| measured | 1 hot coupon (1 shard) | 3 coupons on 3 shards | ratio |
|---|---|---|---|
| issue script, redis-benchmark EVALSHA, $CONNS conns per coupon | $one/s | $three/s | $(python3 -c "print(round($three/$one, 2))") |
| coupon-api end to end (coupon-bench, $CONNS conns) | $api_one/s | $api_three/s | $(python3 -c "print(round($api_three/$api_one, 2))") |
EOT
)
echo "$table"
if [ "${BENCH_RECORD:-0}" = 1 ]; then
  {
    echo; echo "## Redis Cluster scale-out — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty)"
    echo; echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load before: $(cut -d' ' -f1-3 /proc/loadavg). Command: \`deploy/bench/cluster.sh\`."
    echo; echo "$table"
  } >>BENCHMARKS.md
fi
