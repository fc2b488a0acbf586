#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then formatting, lints, unit and integration
# tests against real services (one integration-test binary, tests/it, sharing one throwaway
# PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_system_deps
# The Python test tools' virtual environment, first on PATH: the tests find moto_server, hadolint
# and python3 (boto3, aiosmtpd, PyYAML) there.
ensure_venv
ensure_s3_servers
ensure_notify_services
ensure_deploy_tools
ensure_browser

log "cargo fmt --check"
cargo fmt --check
log "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
log "cargo test"
status=0
cargo test --all-targets --no-fail-fast -- --test-threads=4 || status=$?
log "doc tests"
cargo test --doc --quiet || status=$?
# Data directories of throwaway clusters whose test process has ended.
for d in "${TMPDIR:-/tmp}"/stackback-test-*; do
  [ -d "$d" ] || continue
  pid=${d##*/stackback-test-}; pid=${pid%%-*}
  [ -d "/proc/$pid" ] || rm -rf "$d"
done
exit $status
