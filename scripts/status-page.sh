#!/usr/bin/env bash
# Regenerates docs/status-page.png, the daemon's status page (`/`) as the README shows it: a
# throwaway PostgreSQL with the sample data and a throwaway S3 server (moto) with a bucket, two
# weeks of nightly runs at 02:00 (each run's clock set with libfaketime; the data grows a little
# every night; one night the database password is wrong, another a second bucket is missing), the
# daemon serving that directory, and headless Chromium's screenshot of `/`.
#
#   ./scripts/status-page.sh [OUT.png]     (as root on Debian: installs what it lacks)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

OUT=${1:-docs/status-page.png}
NIGHTS=14
ZONE=Europe/Berlin

ensure_rust
ensure_system_deps
ensure_venv
ensure_moto
ensure_browser
log "building stackback"
cargo build --quiet
SB=${CARGO_TARGET_DIR:-$PWD/target}/debug/stackback
FAKELIB=$(ls /usr/lib/*/faketime/libfaketime.so.1 | head -n 1)

WORK=$(mktemp -d /tmp/stackback-page.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
MOTO_PID= DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null
  pg_stop "$PGDIR"
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_port)
PW="page-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
log "starting a throwaway PostgreSQL on 127.0.0.1:$PORT"
pg_start "$PGDIR" "$PORT" "$PW"
PSQL=(env PGPASSWORD="$PW" "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE schedgen"
"${PSQL[@]}" -d schedgen -f tests/it/support/seed.sql
"${PSQL[@]}" -d schedgen -c "CREATE TABLE nightly_growth (n int, pad text)"

S3PORT=$(free_port)
log "starting a throwaway S3 server (moto) on 127.0.0.1:$S3PORT"
"$STACKBACK_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$S3PORT") 2>/dev/null && break; sleep 0.2; done
export MINIO_ENDPOINT=http://127.0.0.1:$S3PORT MINIO_ROOT_USER=minioadmin MINIO_ROOT_PASSWORD=minio-secret-key MINIO_BUCKET=schedgen-pdfs
S3=(env S3_ENDPOINT="$MINIO_ENDPOINT" AWS_ACCESS_KEY_ID=$MINIO_ROOT_USER AWS_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD AWS_DEFAULT_REGION=us-east-1 "$VENV_PY" tests/it/support/s3tool.py)
"${S3[@]}" populate schedgen-pdfs --bulk 150

export POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$PORT POSTGRES_USER=postgres POSTGRES_PASSWORD=$PW POSTGRES_DB=schedgen
export BACKUP_DIR=$WORK/backups TZ=$ZONE BACKUP_SCHEDULE="0 2 * * *" BACKUP_RETENTION_DAYS=30

# The newest 02:00 that is past (five minutes of slack for a run to have finished), then a run at
# 02:00 on each of the nights before it, oldest first.
LAST_DAY=$(date +%F)
[ "$(date -d "$LAST_DAY 02:05" +%s)" -le "$(date +%s)" ] || LAST_DAY=$(date -d "$LAST_DAY -1 day" +%F)
for i in $(seq $((NIGHTS - 1)) -1 0); do
  day=$(date -d "$LAST_DAY -$i days" +%F)
  "${PSQL[@]}" -d schedgen -c "INSERT INTO nightly_growth SELECT g, md5(g::text) FROM generate_series(1, 4000 + 300 * $i) g"
  "${S3[@]}" put schedgen-pdfs "invoices/$day.pdf" "%PDF-1.4 invoice of $day" >/dev/null
  extra=()
  case $i in
    9) extra=(POSTGRES_PASSWORD=wrong-password) ;;
    4) extra=(MINIO_BUCKET=schedgen-pdfs,schedgen-archive) ;;
  esac
  log "the night of $day"
  env LD_PRELOAD="$FAKELIB" FAKETIME="@$day 02:00:00" FAKETIME_DONT_FAKE_MONOTONIC=1 "${extra[@]}" \
    "$SB" run >"$WORK/run.log" 2>&1 || true
  grep -m 1 '^run ' "$WORK/run.log" || tail -n 2 "$WORK/run.log"
done

HTTP=$(free_port)
log "starting the daemon on 127.0.0.1:$HTTP"
BACKUP_HTTP_ADDR=127.0.0.1:$HTTP "$SB" daemon >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 150); do grep -q "setup checked" "$WORK/daemon.log" && break; sleep 0.2; done
grep -q "setup checked" "$WORK/daemon.log" || { cat "$WORK/daemon.log" >&2; exit 1; }

log "screenshot of / into $OUT"
PROFILE=$WORK/chromium
timeout -k 5 120 chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
  --user-data-dir="$PROFILE" --window-size=1280,1740 --screenshot="$WORK/page.png" \
  "http://127.0.0.1:$HTTP/" 2>"$WORK/chromium.log" || { cat "$WORK/chromium.log" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
cp "$WORK/page.png" "$OUT"
"$SB" list | tail -n 1
log "wrote $OUT"
