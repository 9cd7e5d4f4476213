#!/usr/bin/env bash
# Starts the whole system locally — Redis and MariaDB (installed and started if
# missing), one coupon-api and two coupon-consumers — and runs a demo flash sale
# with coupon-bench: USERS people (each asking twice, with their JWT) for
# QUANTITY coupons. Prints what happened and where the HTML report is
# (.run/demo/sale.html, one file that opens offline), then stops the services
# it started (KEEP=1 keeps them).
set -euo pipefail
cd "$(dirname "$0")/../.."

USERS=${USERS:-20000}
QUANTITY=${QUANTITY:-1000}
CONCURRENCY=${CONCURRENCY:-64}
API_PORT=${API_PORT:-8080}
export ADMIN_TOKEN=${ADMIN_TOKEN:-demo-admin-token}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export DATABASE_URL=${DATABASE_URL:-mysql://root@127.0.0.1:3306/coupon}
export RUST_LOG=${RUST_LOG:-info}
# Verified identity by default: the API checks an HS256 JWT on every issue
# request and coupon-bench mints one per request (both read AUTH_JWT_SECRET).
# AUTH=trusted runs the API in trusted-caller mode instead.
if [ "${AUTH:-jwt}" = trusted ]; then
  unset AUTH_JWT_SECRET
else
  export AUTH_JWT_SECRET=${AUTH_JWT_SECRET:-$(head -c 32 /dev/urandom | base64 | tr -d '\n')}
fi
RUN=.run/demo
mkdir -p "$RUN"

./deploy/local/services.sh
echo "== building (release)"
cargo build --release --bins --quiet

pids=()
stop_all() {
  if [ "${KEEP:-0}" = 1 ]; then echo "== KEEP=1: services keep running (pids ${pids[*]})"; return; fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

LISTEN_ADDR=127.0.0.1:$API_PORT ./target/release/coupon-api >"$RUN/api.log" 2>&1 &
pids+=($!)
for i in 1 2; do
  CONSUMER_NAME=demo-consumer-$i METRICS_ADDR=127.0.0.1:$((9463 + i)) \
    ./target/release/coupon-consumer >"$RUN/consumer-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$API_PORT/readyz" >/dev/null || { echo "coupon-api did not become ready; see $RUN/api.log"; exit 1; }
echo "== API on http://127.0.0.1:$API_PORT, consumers' metrics on :9464 and :9465, logs in $RUN/"

identity="each request with its user's JWT"
[ -n "${AUTH_JWT_SECRET:-}" ] || identity="trusted caller"
echo "== flash sale: $USERS users, each asking twice, for $QUANTITY coupons ($identity)"
# A failed check still writes the report: say where it is, then exit with the verdict.
verdict=0
./target/release/coupon-bench --api-url "http://127.0.0.1:$API_PORT" --users "$USERS" --retries 1 \
  --quantity "$QUANTITY" --concurrency "$CONCURRENCY" --json "$RUN/summary.json" --report "$RUN/sale.html" \
  || verdict=$?

coupon=$(python3 -c "import json,sys; d=json.load(open('$RUN/summary.json')); print(d['coupons'][0]['id'])" 2>/dev/null || true)
if [ -n "$coupon" ]; then
  echo "== in MySQL for coupon $coupon"
  db=${DATABASE_URL##*/}
  mysql_cli() { if command -v mariadb >/dev/null; then mariadb "$@"; else mysql "$@"; fi; }
  mysql_cli -h 127.0.0.1 -uroot "$db" -e "SELECT c.id AS coupon, c.total_quantity, c.issued_quantity,
      (SELECT COUNT(*) FROM coupon_issues i WHERE i.coupon_id = c.id) AS \`rows\`,
      (SELECT COUNT(DISTINCT user_id) FROM coupon_issues i WHERE i.coupon_id = c.id) AS distinct_users
    FROM coupons c WHERE c.id = $coupon"
fi
echo "== the report: file://$PWD/$RUN/sale.html (open it in a browser; it needs no network)"
exit "$verdict"
