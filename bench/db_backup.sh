#!/usr/bin/env bash
# Benchmark: `stackback run` on a PostgreSQL database of about SIZE_MB (default 1024) MiB.
# Prints a table: compression, database size, dump size, stored size, wall time, throughput, peak RSS.
# Usage: bench/db_backup.sh [SIZE_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_system_deps
SIZE_MB=${1:-1024}
cargo build --release --quiet
SB=$PWD/target/release/stackback
WORK=$(mktemp -d /tmp/stackback-bench.XXXXXX); chmod 755 "$WORK"
PORT=$(free_port); PW=benchpw
trap 'pg_stop "$WORK/pg"; rm -rf "$WORK"' EXIT
pg_start "$WORK/pg" "$PORT" "$PW"
export PGPASSWORD=$PW
PSQL=("$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
# ~135 bytes per row on disk: rows = SIZE_MB * 1MiB / 135.
ROWS=$(( SIZE_MB * 1048576 / 135 ))
"${PSQL[@]}" -d bench -c "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, kind text, payload jsonb, note text)"
"${PSQL[@]}" -d bench -c "INSERT INTO events SELECT g, timestamptz '2024-01-01' + g * interval '1 second', 'kind' || (g % 17), jsonb_build_object('n', g, 'ok', g % 2 = 0), md5(g::text) FROM generate_series(1, $ROWS) g"
DBSIZE=$("${PSQL[@]}" -d bench -tA -c "select pg_database_size('bench')")
export POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$PORT POSTGRES_USER=postgres POSTGRES_PASSWORD=$PW POSTGRES_DB=bench
printf '\n%-6s %10s %10s %10s %8s %10s %10s\n' compr db_MiB dump_MiB stored_MiB wall_s MiB/s peak_RSS_MiB
for c in gzip zstd none; do
  export BACKUP_DIR=$WORK/backups-$c
  /usr/bin/time -v "$SB" run --compression "$c" >/dev/null 2>"$WORK/time-$c.txt" || { cat "$WORK/time-$c.txt"; exit 1; }
  REC=$(ls "$BACKUP_DIR"/run_*.json)
  PLAIN=$(python3 -c "import json,sys; print(json.load(open('$REC'))['artifacts'][0]['plain_bytes'])")
  STORED=$(python3 -c "import json,sys; print(json.load(open('$REC'))['artifacts'][0]['stored_bytes'])")
  WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time-$c.txt")
  RSS=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time-$c.txt")
  awk -v c="$c" -v db="$DBSIZE" -v p="$PLAIN" -v s="$STORED" -v w="$WALL" -v r="$RSS" 'BEGIN {
    printf "%-6s %10.0f %10.0f %10.1f %8.1f %10.1f %10.1f\n", c, db/1048576, p/1048576, s/1048576, w, p/1048576/w, r/1024 }'
  rm -rf "$BACKUP_DIR"
done
