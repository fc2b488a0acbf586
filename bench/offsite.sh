#!/usr/bin/env bash
# Benchmark: the off-site copy of a ~1 GiB incompressible artifact to an S3 remote (Garage), a
# WebDAV remote (`rclone serve webdav`) and an SFTP remote (`rclone serve sftp`, key login, the
# host key checked against a known_hosts file), all throwaway servers on loopback.
#
# The artifact is the archive of a bucket holding one object of random bytes (BACKUP_COMPRESSION
# =none: random bytes do not compress, and gzip would only add CPU time to the backup half). Each
# remote gets a `stackback run` of its own into a fresh BACKUP_DIR (so the copy is that one run,
# no catch-up), under `/usr/bin/time -v`. Reported per remote: the bytes and seconds of the
# off-site step as the run measured them (.stackback-remote.json: last_bytes, last_seconds; the
# run's stdout line "off-site ... in N s" rounds the same value), MB/s (10^6 bytes) from them, and
# the peak RSS of the whole `stackback run`. The off-site seconds include reading every file back
# and checking its SHA-256, so the bytes cross the loopback twice. A first run without a remote
# gives the backup's own peak RSS, to tell the copy's share apart. As root the work directory is
# a tmpfs (about 5 x MIB), so the disk is neither measured nor filled.
#
# Usage: bench/offsite.sh [MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_system_deps; ensure_s3_servers
MIB=${1:-1024}
log "building the release binary (under the shared build lock)"
flock /tmp/cargo-build.lock cargo build --release --quiet
SB=$PWD/target/release/stackback
# A short path: the SFTP remote's ssh control socket lives under BACKUP_DIR
# (BACKUP_DIR/.stackback-ssh/ssh/.ssh-connectionXXXXXX/master.XXXXXXXXXXXXXXXX) and a Unix socket
# path must fit in 107 bytes, so a BACKUP_DIR longer than about 42 characters fails (bench/README.md).
WORK=$(mktemp -d /tmp/sbo.XXXXXX)
# As root, everything (source, backup directory, remotes) lives on a tmpfs: the numbers are then
# stackback's and the servers', not the disk's, and a few GiB of copies never fill the disk.
MOUNTED=0
if [ "$(id -u)" -eq 0 ]; then
  mount -t tmpfs -o "size=$((MIB * 5 + 1024))m,mode=0755" tmpfs "$WORK" && MOUNTED=1
fi
chmod 755 "$WORK"
PIDS=()
cleanup() {
  pg_stop "$WORK/pg"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$MOUNTED" -eq 1 ] && umount "$WORK"
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_listening() { # PORT PID LOG
  local i
  for i in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; log "server on port $1 exited"; return 1; }
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$3" >&2; log "nothing listens on port $1 after 30 s"; return 1
}

PORT=$(free_port); S3PORT=$(free_port); PW=benchpw
pg_start "$WORK/pg" "$PORT" "$PW"
PGPASSWORD=$PW "$(pg_bindir)/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "CREATE DATABASE app"
garage_start "$WORK/garage" "$S3PORT"
PIDS+=("$(cat "$WORK/garage/garage.pid")")
export MINIO_ENDPOINT=http://127.0.0.1:$S3PORT MINIO_ACCESS_KEY=$GARAGE_KEY_ID MINIO_SECRET_KEY=$GARAGE_SECRET MINIO_REGION=garage MINIO_BUCKET=bench
export POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$PORT POSTGRES_USER=postgres POSTGRES_PASSWORD=$PW POSTGRES_DB=app
export BACKUP_MIN_DB_BYTES=0 BACKUP_COMPRESSION=none RUST_LOG=warn
S3=(env S3_ENDPOINT="$MINIO_ENDPOINT" AWS_ACCESS_KEY_ID=$MINIO_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$MINIO_SECRET_KEY AWS_DEFAULT_REGION=garage "$VENV_PY" tests/it/support/s3tool.py)
log "a bucket holding one ${MIB} MiB object of random bytes"
"${S3[@]}" mkbucket bench
head -c "${MIB}M" /dev/urandom > "$WORK/random.bin"
"${S3[@]}" putfile bench random.bin "$WORK/random.bin"
rm "$WORK/random.bin"
"${S3[@]}" mkbucket offsite

# The file servers: rclone with no configuration file of the user's.
export RCLONE_CONFIG=/dev/null
DAVPORT=$(free_port); mkdir -p "$WORK/dav"
rclone serve webdav --addr "127.0.0.1:$DAVPORT" --user dav --pass dav-secret "$WORK/dav" >"$WORK/dav.log" 2>&1 &
PIDS+=($!); wait_listening "$DAVPORT" $! "$WORK/dav.log"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/client"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host"
SFTPPORT=$(free_port); mkdir -p "$WORK/sftp"
rclone serve sftp --addr "127.0.0.1:$SFTPPORT" --authorized-keys "$WORK/client.pub" --key "$WORK/host" \
  "$WORK/sftp" >"$WORK/sftp.log" 2>&1 &
PIDS+=($!); wait_listening "$SFTPPORT" $! "$WORK/sftp.log"
echo "[127.0.0.1]:$SFTPPORT $(cut -d' ' -f1,2 "$WORK/host.pub")" > "$WORK/known_hosts"

ROWS=()
measure() { # LABEL VAR=VALUE...: one `stackback run` into a fresh BACKUP_DIR with those settings
  local label=$1; shift
  local dir=$WORK/backups
  rm -rf "$dir"
  if ! env BACKUP_DIR="$dir" "$@" /usr/bin/time -v -o "$WORK/time.txt" "$SB" run >"$WORK/out.txt" 2>"$WORK/err.txt"; then
    cat "$WORK/out.txt" "$WORK/err.txt" "$WORK/time.txt" >&2; log "$label: stackback run failed"; exit 1
  fi
  grep -E '^  (objects|off-site)' "$WORK/out.txt" >&2 || true
  local rss bytes secs
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$WORK/time.txt")
  if [ -f "$dir/.stackback-remote.json" ]; then
    read -r bytes secs < <(python3 -c "import json; s=json.load(open('$dir/.stackback-remote.json')); assert s['last_ok'], s; print(s['last_bytes'], s['last_seconds'])")
    ROWS+=("$(awk -v l="$label" -v b="$bytes" -v s="$secs" -v r="$rss" 'BEGIN {
      printf "| %s | %d | %.1f | %.1f | %s |", l, b, s, b / 1e6 / s, r }')")
  else
    ROWS+=("| $label | - | - | - | $rss |")
  fi
  rm -rf "$dir" "$WORK/dav/host1" "$WORK/sftp/host1"
}

log "local only (the backup's own peak RSS)"
measure "none (local backup only)"
log "S3 (Garage)"
measure "s3 (Garage)" BACKUP_REMOTE_URL=s3://offsite/host1 BACKUP_REMOTE_ENDPOINT="$MINIO_ENDPOINT" \
  BACKUP_REMOTE_REGION=garage BACKUP_REMOTE_ACCESS_KEY="$GARAGE_KEY_ID" BACKUP_REMOTE_SECRET_KEY="$GARAGE_SECRET"
log "WebDAV (rclone serve webdav)"
measure "webdav (rclone)" BACKUP_REMOTE_URL="webdav://127.0.0.1:$DAVPORT/host1" \
  BACKUP_REMOTE_USER=dav BACKUP_REMOTE_PASSWORD=dav-secret
log "SFTP (rclone serve sftp)"
measure "sftp (rclone)" BACKUP_REMOTE_URL="sftp://backup@127.0.0.1:$SFTPPORT/host1" \
  BACKUP_REMOTE_SSH_KEY_FILE="$WORK/client" BACKUP_REMOTE_KNOWN_HOSTS="$WORK/known_hosts"

printf '\n| remote | bytes | seconds | MB/s | peak RSS MiB |\n|---|---:|---:|---:|---:|\n'
printf '%s\n' "${ROWS[@]}"
