# Shell helpers the benchmark scripts share (sourced, not run): the results
# directory, logging and facts, recording every command they run in
# $COMMANDS, starting background processes whose PIDs go into PIDS (stopped by
# the cleanup on exit), stopping one of them, the checks before a run and the
# machine's facts.

# Quotes arguments for the record, only where the shell needs it.
quote() {
  local out="" a
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+="$a "; else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  printf '%s' "${out% }"
}
# Runs a command and records it; the environment goes in as `env K=V`.
run() { quote "$@" >>"$COMMANDS"; echo >>"$COMMANDS"; "$@"; }
# The same for a background process, output to LOG: records it first (so the
# commands stay in order), starts it, and remembers its PID in BG_PID and PIDS.
# A backgrounded simple command is forked and exec'd: the PID is the command's.
start_bg() { # LOG cmd ...
  local log=$1
  shift
  quote "$@" >>"$COMMANDS"
  echo "   &" >>"$COMMANDS"
  "$@" >"$log" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}
record() { printf '%s\n' "$*" >>"$COMMANDS"; }
# Stops one process we started and forgets it.
stop_pid() {
  local pid=$1 keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Waits up to 30 s for the API at URL to answer /readyz, or dies naming LOG.
wait_ready() { # url log
  for _ in $(seq 150); do curl -fsS "$1/readyz" >/dev/null 2>&1 && return; sleep 0.2; done
  die "coupon-api at $1 is not ready (see $2)"
}
# Creates a coupon through the API at URL (ADMIN_TOKEN), open from a minute ago
# for a day; prints its id.
create_coupon() { # url name quantity
  local start end
  start=$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ)
  end=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
  curl -fsS -X POST "$1/coupons" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$2\",\"total_quantity\":$3,\"issue_start\":\"$start\",\"issue_end\":\"$end\"}" | jq -r .id
}
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# Opens the run's results directory $OUT (made absolute): the facts the
# summary reads ($FACTS) and the commands run ($COMMANDS); TAG prefixes the log.
open_results() { # TAG
  BENCH_TAG=$1
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  FACTS=$OUT/facts.tsv
  COMMANDS=$OUT/commands.txt
  : >"$FACTS"
  : >"$COMMANDS"
}
log() { printf '\033[1m[%s %s]\033[0m %s\n' "$BENCH_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }
sql() { mariadb -h 127.0.0.1 -P 3306 -uroot -N -B "$@"; }
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# On exit: stops every process in PIDS, removes REDIS_DIR, then runs the
# script's own `on_cleanup` if it has one.
PIDS=()
REDIS_DIR=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$REDIS_DIR" ]; then rm -rf "$REDIS_DIR"; fi
  if declare -F on_cleanup >/dev/null; then on_cleanup; fi
  if [ "$status" -ne 0 ]; then log "stopped everything it started; logs in $OUT"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The checks both scripts make before they start anything: never the
# machine's Redis, a database name safe to drop, MariaDB answering.
check_servers() {
  [ "$REDIS_PORT" != 6379 ] || die "REDIS_PORT must not be the machine's Redis (6379)"
  [[ $DB_NAME =~ ^[A-Za-z0-9_]+$ ]] || die "DB_NAME must be letters, digits and _"
  sql -e 'SELECT 1' >/dev/null || die "MariaDB does not answer on 127.0.0.1:3306 as root (deploy/local/services.sh)"
}

# wrk, installed from Debian's packages when missing.
ensure_wrk() {
  command -v wrk >/dev/null && return
  log "installing wrk"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null || die "wrk is missing"
}

# The machine and the code, as facts: load, cores, CPU, kernel, server
# versions, the commit (`+dirty` with uncommitted changes).
record_machine() {
  fact load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
  fact nproc "$(nproc)"
  fact cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  fact kernel "$(uname -r)"
  fact redis_version "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
  fact mariadb_version "$(sql -e 'SELECT VERSION()')"
  local commit
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit+dirty"; fi
  fact commit "$commit"
}
