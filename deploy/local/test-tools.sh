#!/usr/bin/env bash
# Installs what the test suite drives besides Redis and MariaDB, when missing:
# Schemathesis (`st`, from PyPI: the property-based tester run over the OpenAPI
# document by tests/tests/schemathesis.rs), libfaketime (an API process with
# a clock that runs fast, tests/tests/operate.rs) and Chromium (the load
# report rendered headless, tests/tests/load_report.rs).
set -euo pipefail

log() { printf '\033[1m[test-tools]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -f /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  log "installing faketime"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi

if ! command -v chromium >/dev/null; then
  log "installing chromium"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v st >/dev/null; then
  if ! command -v pip3 >/dev/null && ! python3 -m pip --version >/dev/null 2>&1; then
    log "installing python3-pip"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
  fi
  log "installing schemathesis (pip)"
  # Debian's system Python refuses user installs without the flag (PEP 668).
  python3 -m pip install --quiet schemathesis 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages schemathesis
  hash -r
fi
command -v st >/dev/null || { log "schemathesis installed but \`st\` is not on PATH"; exit 1; }
