# Shell helpers the benchmark scripts share (sourced, not run): recording
# every command they run in $COMMANDS, starting background processes whose
# PIDs go into PIDS (each script's cleanup stops them), stopping one of them.

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
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
