#!/usr/bin/env bash
# The reliability suite of docs/RELIABILITY.md: fault injection, bad input, security and the soak,
# against real PostgreSQL, Garage and moto. Needs root (tmpfs mounts, chattr, a run as nobody),
# like the rest of the suite. Extra arguments go to the test binary (e.g. --nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_system_deps
ensure_s3_servers
ensure_notify_services

cargo test --test it --no-run
cargo test --test it -- fault_ bad_input:: bad_archive:: security:: soak:: --test-threads=4 "$@"
echo "soak numbers: $(cat target/tmp/soak.txt 2>/dev/null || echo 'not written')"
