#!/usr/bin/env bash
# Runs the whole test suite against real Redis and MariaDB: starts (or
# installs) them first, builds the binaries the fault tests run as processes.
set -euo pipefail
cd "$(dirname "$0")/../.."
./deploy/local/services.sh
./deploy/local/test-tools.sh
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads=4 "$@"
