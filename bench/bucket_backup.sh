#!/usr/bin/env bash
# Benchmark: bucket backup and restore on Garage: N small objects (default 5000) plus one large
# object (default 120 MiB). Prints wall time, throughput and peak RSS of `stackback run` (database
# included, as a real run does) and of `stackback restore objects`, for 1 and 16 concurrent fetches.
# Usage: bench/bucket_backup.sh [OBJECTS] [BIG_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_system_deps; ensure_s3_servers
N=${1:-5000}; BIG=${2:-120}
cargo build --release --quiet
SB=$PWD/target/release/stackback
WORK=$(mktemp -d /tmp/stackback-bench.XXXXXX); chmod 755 "$WORK"
PORT=$(free_port); S3PORT=$(free_port); PW=benchpw
trap 'pg_stop "$WORK/pg"; kill $(cat "$WORK/garage/garage.pid") 2>/dev/null; rm -rf "$WORK"' EXIT
pg_start "$WORK/pg" "$PORT" "$PW"
PGPASSWORD=$PW "$(pg_bindir)/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "CREATE DATABASE app"
garage_start "$WORK/garage" "$S3PORT"
export MINIO_ENDPOINT=http://127.0.0.1:$S3PORT MINIO_ACCESS_KEY=$GARAGE_KEY_ID MINIO_SECRET_KEY=$GARAGE_SECRET MINIO_REGION=garage MINIO_BUCKET=bench
export POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$PORT POSTGRES_USER=postgres POSTGRES_PASSWORD=$PW POSTGRES_DB=app BACKUP_MIN_DB_BYTES=0
S3=(env S3_ENDPOINT="$MINIO_ENDPOINT" AWS_ACCESS_KEY_ID=$MINIO_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$MINIO_SECRET_KEY AWS_DEFAULT_REGION=garage "$VENV_PY" tests/it/support/s3tool.py)
"${S3[@]}" populate bench --bulk "$N" --big-mib "$BIG"
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -v "$@" >"$WORK/out.txt" 2>"$WORK/time.txt" || { cat "$WORK/out.txt" "$WORK/time.txt"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
  # Objects and plain bytes as the run record counted them.
  local rec objs bytes
  rec=$(ls "$BACKUP_DIR"/run_*.json | tail -n 1)
  objs=$(python3 -c "import json; a=[x for x in json.load(open('$rec'))['artifacts'] if x['kind']=='objects'][0]; print(a['objects'], a['plain_bytes'])")
  bytes=${objs#* }; objs=${objs% *}
  awk -v l="$label" -v w="$wall" -v r="$rss" -v n="$objs" -v b="$bytes" 'BEGIN {
    printf "%-34s %8d %8.1f %10.1f %12.1f\n", l, n, w, b / 1048576 / w, r / 1024 }'
}
printf '\n%-34s %8s %8s %10s %12s\n' operation objects wall_s MiB/s peak_RSS_MiB
for c in 1 16; do
  export BACKUP_S3_CONCURRENCY=$c BACKUP_DIR=$WORK/backups-$c
  measure "run (db + bucket), concurrency $c" "$SB" run
done
export BACKUP_S3_CONCURRENCY=16 BACKUP_DIR=$WORK/backups-16
measure "restore objects --verify, conc. 16" "$SB" restore objects latest --bucket restored --create-bucket --verify
