#!/usr/bin/env bash
# Benchmark against the tools an operator would otherwise use (issue #12): one table of every
# measurement, then the targets and whether each is met.
#
#   database (pgbench -i -s SCALE plus a table of wide text/jsonb rows), per scale:
#     stackback run, gzip       vs  pg_dump | gzip -6 > FILE          goal wall <= 0.5x, size <= 1.05x
#     stackback run, zstd       vs  pg_dump > /dev/null               goal wall <= 1.15x
#                               and pg_dump | zstd -1 -T0 > FILE (the same compression; no goal)
#     stackback run, gzip/zstd with age encryption (largest scale; no goal, same baselines)
#     stackback verify FILE     vs  gunzip -c FILE | sha256sum        goal <= 0.5x  (largest scale)
#                               and gunzip -c FILE | b3sum (the checksum stackback keeps; no goal)
#     stackback restore db      vs  gunzip -c FILE | psql             goal <= 1.0x  (largest scale;
#                               stackback creates its target, so its rows load over N connections;
#                               --jobs 1 into an existing database, one transaction: no goal)
#   bucket (PDF-like objects on Garage):
#     stackback run             vs  rclone copy + tar czf             goal <= 0.5x
#                               vs  tar czf of Garage's data/meta     goal <= 1.0x
#     stackback restore objects vs  rclone copy up to a new bucket    goal <= 1.0x
#   peak RSS: database runs <= 64 MiB at every scale, the bucket run <= 128 MiB
#
# Every command runs under /usr/bin/time; a row is the median of --reps repetitions by wall time
# (the lower median for an even count). The database backup rows take --db-reps instead (default 7):
# on a shared 2-vCPU VM the raw dump's own wall time moves by more than the gap measured (2.6-4.8 s
# at scale 20 within minutes), and each of those repetitions runs stackback and its baseline back to
# back, so the table also prints the ratio of each such pair. Everything runs on throwaway servers (PostgreSQL, Garage)
# in a mktemp work directory that the EXIT trap removes. Any failing command stops the script with
# a non-zero exit and its output; a target that is not met is a result, not a failure (exit 0).
#
# Time on the project's 2-vCPU VM (2026-11-29): 13-17 minutes at the defaults (--reps 3,
# --db-reps 7); 52 minutes on the slower VM before it.
#
# Usage: bench/run.sh [--db-scales "20 40"] [--objects 5000] [--reps 3] [--db-reps 7]
#                     [--skip-bucket] [--skip-db] [--profile]
#   STACKBACK_BIN=path  use this binary instead of building target/release/stackback
#   --profile           perf record of the database gzip and zstd runs at the first scale, reports
#                       printed last
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib.sh

usage() { sed -n '/^# Usage:/,/^#   --profile/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { log "$*"; exit 1; }

DB_SCALES="20 40"; OBJECTS=5000; REPS=3; DB_REPS=7; SKIP_BUCKET=0; SKIP_DB=0; PROFILE=0
while [ $# -gt 0 ]; do
  case $1 in
    --db-scales) [ $# -ge 2 ] || usage; DB_SCALES=$2; shift 2 ;;
    --objects) [ $# -ge 2 ] || usage; OBJECTS=$2; shift 2 ;;
    --reps) [ $# -ge 2 ] || usage; REPS=$2; shift 2 ;;
    --db-reps) [ $# -ge 2 ] || usage; DB_REPS=$2; shift 2 ;;
    --skip-bucket) SKIP_BUCKET=1; shift ;;
    --skip-db) SKIP_DB=1; shift ;;
    --profile) PROFILE=1; shift ;;
    -h|--help) usage ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
for n in $DB_SCALES $OBJECTS $REPS $DB_REPS; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "not a positive integer: $n"
done
[ -n "$DB_SCALES" ] || die "--db-scales is empty"
FIRST_SCALE=${DB_SCALES%% *}; FIRST_SCALE=${FIRST_SCALE## }
LARGEST_SCALE=$(printf '%s\n' $DB_SCALES | sort -n | tail -n 1)
if [ "$PROFILE" -eq 1 ] && [ "$SKIP_DB" -eq 1 ]; then die "--profile profiles the database run: drop --skip-db"; fi

# The caller's settings must not leak into the runs (a MINIO_ENDPOINT in the shell would turn the
# database-only runs into bucket runs, a BACKUP_COMPRESSION_LEVEL would change the comparison; an
# AWS_CA_BUNDLE makes rclone 1.60 refuse to start: "LoadCustomCABundleError ... unsupported
# transport").
for v in $(compgen -e); do
  case $v in
    MINIO_*|BACKUP_*|POSTGRES_*|PG*|DATABASE_URL*|STACKBACK_CONFIG|SMTP_*|RCLONE_*|AWS_*|TZ) unset "$v" ;;
  esac
done

# --- tools -----------------------------------------------------------------------------------------

ensure_system_deps                                  # PostgreSQL, gzip, zstd, time, rclone, age
[ "$SKIP_BUCKET" -eq 1 ] || ensure_s3_servers       # Garage, boto3 (in $VENV_PY)
if [ "$PROFILE" -eq 1 ] && ! command -v perf >/dev/null 2>&1; then apt_install linux-perf; fi
PGBIN=$(pg_bindir)
if [ -n "${STACKBACK_BIN:-}" ]; then
  SB=$STACKBACK_BIN
else
  log "building the release binary (under the shared build lock)"
  flock /tmp/cargo-build.lock cargo build --release --quiet
  SB=$ROOT/target/release/stackback
fi
[ -x "$SB" ] || die "no stackback binary at $SB"

# --- work directory, servers, cleanup --------------------------------------------------------------

WORK=$(mktemp -d /tmp/stackback-bench.XXXXXX)
chmod 755 "$WORK"   # the postgres user (pg_start as root) must reach its cluster below it
cleanup() {
  pg_stop "$WORK/pg"
  local pid
  if [ -f "$WORK/garage/garage.pid" ]; then
    pid=$(cat "$WORK/garage/garage.pid")
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/reps" "$WORK/logs"

PW=benchpw; PORT=$(free_port)
log "PostgreSQL on 127.0.0.1:$PORT"
pg_start "$WORK/pg" "$PORT" "$PW"
# libpq settings for the baselines (pg_dump, psql, pgbench); stackback gets POSTGRES_* instead.
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGPASSWORD=$PW
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)
# Settings every stackback command gets: the connection, and no minimum dump size (the bucket
# runs back up an empty database).
SB_ENV=(POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$PORT POSTGRES_USER=postgres POSTGRES_PASSWORD=$PW
  BACKUP_MIN_DB_BYTES=0 NO_COLOR=1)

# The options stackback's pg_dump gets (src/source/postgres.rs, database_command: --no-password,
# --format=plain, --lock-wait-timeout of BACKUP_LOCK_WAIT_TIMEOUT, default 10m, --clean
# --if-exists with the default BACKUP_PG_DUMP_CLEAN=true), so the baselines dump the same SQL. The
# one it adds, --snapshot (the exported snapshot its row counts are taken in), changes no byte.
PG_DUMP=("$PGBIN/pg_dump" --no-password --format=plain --lock-wait-timeout=600000 --clean --if-exists)

# --- measuring -------------------------------------------------------------------------------------

# quiet NAME CMD...: runs a setup command (untimed), its output in logs/NAME.log, shown on failure.
quiet() {
  local name=$1; shift
  "$@" >"$WORK/logs/$name.log" 2>&1 || { tail -n 40 "$WORK/logs/$name.log" >&2; die "failed: $*"; }
}

# One repetition may time several commands (rclone, then tar): rep_begin, timed..., rep_end.
rep_begin() { REP_ACC="0 0 0 0"; }
# timed CMD...: runs CMD under /usr/bin/time, its stdout/stderr in cmd.out/cmd.err, and adds wall,
# user and sys seconds to the repetition; peak RSS is the largest of the repetition's commands
# (for `bash -c 'a | b'`, time reports the largest process of the pipeline, not their sum).
timed() {
  if ! /usr/bin/time -f '%e %U %S %M' -o "$WORK/time.txt" "$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err"; then
    tail -n 40 "$WORK/cmd.out" "$WORK/cmd.err" "$WORK/time.txt" >&2 || true
    die "failed: $*"
  fi
  REP_ACC=$(awk -v acc="$REP_ACC" -v t="$(tail -n 1 "$WORK/time.txt")" 'BEGIN {
    split(acc, a, " "); split(t, b, " ");
    printf "%.2f %.2f %.2f %d", a[1] + b[1], a[2] + b[2], a[3] + b[3], (b[4] > a[4] ? b[4] : a[4]) }')
}
# rep_end ID OUT_BYTES: records the repetition ("wall user sys rss_kib out_bytes"; out "-": none).
# pairs SB_ID BASE_ID: the ratio of each repetition's stackback wall to its baseline's, in order.
pairs() {
  paste -d ' ' "$WORK/reps/$1" "$WORK/reps/$2" | awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), ($6 > 0 ? $1 / $6 : 0) }'
}
rep_end() { echo "$REP_ACC $2" >> "$WORK/reps/$1"; }

# Rows of the table, in order. row_add ID WORK TOOL PLAIN_BYTES [SB_ID]: the median repetition of
# ID; with SB_ID (a baseline row), its ratio column is SB_ID's wall / this row's wall.
ROW_IDS=()
declare -A R_WORK R_TOOL R_LINE R_PLAIN R_VS
row_add() {
  local id=$1 n
  n=$(wc -l < "$WORK/reps/$id")
  R_LINE[$id]=$(sort -n -k1,1 "$WORK/reps/$id" | sed -n "$(( (n + 1) / 2 ))p")
  R_WORK[$id]=$2; R_TOOL[$id]=$3; R_PLAIN[$id]=$4; R_VS[$id]=${5:-}
  ROW_IDS+=("$id")
}
# row_ref ID SRC WORK TOOL SB_ID: a row showing SRC's measurement again, compared with SB_ID.
row_ref() {
  R_LINE[$1]=${R_LINE[$2]}; R_PLAIN[$1]=${R_PLAIN[$2]}
  R_WORK[$1]=$3; R_TOOL[$1]="$4 (same run as above)"; R_VS[$1]=$5
  ROW_IDS+=("$1")
}
field() { local a; read -r -a a <<< "${R_LINE[$1]}"; echo "${a[$2]}"; }   # 0 wall 1 user 2 sys 3 rss 4 out
wall() { field "$1" 0; }
# ratio A B [PRECISION]: A / B, 2 decimals unless told (the targets compare 6: unrounded).
ratio() { awk -v a="$1" -v b="$2" -v p="${3:-2}" 'BEGIN { printf "%.*f", p, (b > 0 ? a / b : 0) }'; }

# The run record of the only run in DIR: prints FIELD of the artifact of KIND (database, objects)
# and fails unless the run is "ok".
record_field() {
  python3 - "$1" "$2" "$3" <<'PY'
import glob, json, sys
d, kind, field = sys.argv[1:]
recs = glob.glob(f"{d}/run_*.json")
assert len(recs) == 1, f"{d}: expected one run record, found {recs}"
r = json.load(open(recs[0]))
assert r["status"] == "ok", f"{recs[0]}: status {r['status']}: {r.get('error')}"
print([a for a in r["artifacts"] if a["kind"] == kind][0][field])
PY
}
bytes_of() { local f t=0; for f in "$@"; do t=$(( t + $(stat -c %s "$f") )); done; echo "$t"; }

# sb_run DIR ENV...: one `stackback run` into a fresh, empty DIR with those settings.
sb_run() {
  local dir=$1; shift
  rm -rf "$dir"; mkdir -p "$dir"
  timed env "${SB_ENV[@]}" BACKUP_DIR="$dir" "$@" "$SB" run
}

# --- machine ---------------------------------------------------------------------------------------

MACHINE=$(
  echo "date:      $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit:    $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (working tree modified)')"
  echo "binary:    $SB ($("$SB" --version 2>/dev/null | head -n 1))"
  echo "cpu:       $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "ram:       $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "kernel:    $(uname -sr)"
  echo "pg_dump:   $("$PGBIN/pg_dump" --version)"
  echo "tools:     $(gzip --version | head -n 1), zstd $(zstd --version | grep -o "v[0-9.]*" | head -n 1), $(rclone version 2>/dev/null | head -n 1), age $(age --version)"
  echo "reps:      $REPS (median by wall); database backups: $DB_REPS"
)
DATASETS=()
PROFILED=()

# --- database --------------------------------------------------------------------------------------

# make_db DB SCALE: pgbench's tables at SCALE, plus `documents`: 4,000 rows per scale unit (80,000
# at scale 20) of about 2 KB each, text and jsonb that compress like an application's (lorem words
# drawn by a hash, md5 strings, a nested jsonb object with a few line items).
make_db() {
  local db=$1 scale=$2 rows=$(( $2 * 4000 ))
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db"
  quiet "pgbench-$db" "$PGBIN/pgbench" -i -q -s "$scale" "$db"
  "${PSQL[@]}" -d "$db" <<SQL
CREATE TABLE documents (
  id bigint PRIMARY KEY,
  title text NOT NULL,
  body text NOT NULL,
  meta jsonb NOT NULL,
  created_at timestamptz NOT NULL
);
INSERT INTO documents
SELECT g,
  'Document ' || g || ' ' || md5(g::text),
  (SELECT string_agg((ARRAY['lorem','ipsum','dolor','sit','amet','consectetur','adipiscing','elit',
      'sed','do','eiusmod','tempor','incididunt','ut','labore','et','dolore','magna','aliqua',
      'schedule','course','student','room','lecture','semester','invoice','payment','exam',
      'faculty','section','instructor','building','monday','friday','credit','hours'])
      [1 + abs(hashint4(g * 200 + i)) % 36], ' ') FROM generate_series(1, 140) i)
    || ' ' || (SELECT string_agg(md5((g * 8 + i)::text), ' ') FROM generate_series(1, 8) i),
  jsonb_build_object(
    'customer', jsonb_build_object('name', 'Customer ' || g % 997, 'email', md5(g::text) || '@example.com',
      'tier', (ARRAY['free','pro','team','enterprise'])[1 + g % 4]),
    'tags', jsonb_build_array('t' || g % 13, 't' || g % 29, md5((g * 3)::text)),
    'items', (SELECT jsonb_agg(jsonb_build_object('sku', 'SKU-' || (g * 7 + i) % 5000, 'qty', 1 + (g + i) % 9,
      'price', round(((g * 13 + i) % 10000) / 100.0, 2), 'note', md5((g + i)::text))) FROM generate_series(1, 6) i),
    'paid', g % 3 <> 0, 'score', round((g % 1000) / 7.0, 3)),
  timestamptz '2024-01-01' + g * interval '37 seconds'
FROM generate_series(1, $rows) g;
VACUUM ANALYZE documents;
SQL
}

# bench_db SCALE: every database row at one scale.
bench_db() {
  local scale=$1 db=bench_s$1 rep dir plain out
  local work="database, scale $scale"
  log "database at scale $scale: pgbench -i -s $scale + $(( scale * 4000 )) documents"
  make_db "$db" "$scale"
  local size; size=$("${PSQL[@]}" -d "$db" -tA -c "SELECT pg_database_size('$db')")
  # A dump first, untimed: every measured run then reads a warm page cache, not only the later ones.
  quiet warmup "${PG_DUMP[@]}" -f /dev/null "$db"

  for rep in $(seq 1 "$DB_REPS"); do
    log "scale $scale, rep $rep/$DB_REPS: gzip"
    dir=$WORK/sb-gzip-$scale
    rep_begin; sb_run "$dir" POSTGRES_DB="$db" BACKUP_COMPRESSION=gzip
    rep_end "sb-gzip-$scale" "$(record_field "$dir" database stored_bytes)"
    rep_begin; timed bash -c 'set -o pipefail; "${@:2}" | gzip -6 > "$1"' _ "$WORK/base.sql.gz" "${PG_DUMP[@]}" "$db"
    rep_end "base-gzip-$scale" "$(bytes_of "$WORK/base.sql.gz")"
    log "scale $scale, rep $rep/$DB_REPS: zstd"
    rep_begin; sb_run "$WORK/sb-zstd" POSTGRES_DB="$db" BACKUP_COMPRESSION=zstd
    rep_end "sb-zstd-$scale" "$(record_field "$WORK/sb-zstd" database stored_bytes)"
    rep_begin; timed "${PG_DUMP[@]}" -f /dev/null "$db"
    rep_end "base-null-$scale" -
    # The floor of any tool that compresses at zstd's level 1 on this machine: a reference row.
    rep_begin; timed bash -c 'set -o pipefail; "${@:2}" | zstd -1 -T0 -q > "$1"' _ "$WORK/base.sql.zst" "${PG_DUMP[@]}" "$db"
    rep_end "base-zstd-$scale" "$(bytes_of "$WORK/base.sql.zst")"
  done
  # The plain size (what pg_dump wrote) as the run recorded it: the MB/s of every row at this scale.
  plain=$(record_field "$WORK/sb-gzip-$scale" database plain_bytes)
  DATASETS+=("database, scale $scale: $(( size / 1000000 )) MB on disk, $(( plain / 1000000 )) MB of plain SQL ($(( scale * 100000 )) pgbench accounts, $(( scale * 4000 )) documents)")
  row_add "sb-gzip-$scale" "$work, gzip" "stackback run" "$plain"
  row_add "base-gzip-$scale" "$work, gzip" "pg_dump | gzip -6" "$plain" "sb-gzip-$scale"
  row_add "sb-zstd-$scale" "$work, zstd" "stackback run" "$plain"
  row_add "base-null-$scale" "$work, zstd" "pg_dump > /dev/null" "$plain" "sb-zstd-$scale"
  row_add "base-zstd-$scale" "$work, zstd" "pg_dump | zstd -1 -T0 (reference)" "$plain" "sb-zstd-$scale"

  if [ "$scale" = "$LARGEST_SCALE" ]; then
    bench_db_largest "$scale" "$db" "$plain"
  fi
  if [ "$PROFILE" -eq 1 ] && [ "$scale" = "$FIRST_SCALE" ]; then
    profile "$db" gzip
    profile "$db" zstd
  fi
  "${PSQL[@]}" -d postgres -c "DROP DATABASE $db"   # its disk, before the next scale's
}

# bench_db_largest SCALE DB PLAIN: age encryption, verify and restore on the largest scale.
bench_db_largest() {
  local scale=$1 db=$2 plain=$3 rep c work="database, scale $1"
  # The identity stays off the "backup host", as docs/manual.md asks: the runs verify the stored
  # ciphertext (and the plaintext in the stream), not a decryption of the whole file.
  age-keygen -o "$WORK/age-key.txt" 2>/dev/null
  local recipient; recipient=$(age-keygen -y "$WORK/age-key.txt")
  for rep in $(seq 1 "$REPS"); do
    for c in gzip zstd; do
      log "scale $scale, rep $rep/$REPS: $c + age"
      rep_begin; sb_run "$WORK/sb-age" POSTGRES_DB="$db" BACKUP_COMPRESSION=$c BACKUP_AGE_RECIPIENTS="$recipient"
      rep_end "sb-age-$c" "$(record_field "$WORK/sb-age" database stored_bytes)"
    done
  done
  row_add sb-age-gzip "$work, gzip + age" "stackback run" "$plain"
  row_ref ref-age-gzip "base-gzip-$scale" "$work, gzip + age" "pg_dump | gzip -6" sb-age-gzip
  row_add sb-age-zstd "$work, zstd + age" "stackback run" "$plain"
  row_ref ref-age-zstd "base-null-$scale" "$work, zstd + age" "pg_dump > /dev/null" sb-age-zstd

  # verify and restore read the gzip artifact of the last gzip run at this scale (both sides).
  local dir=$WORK/sb-gzip-$scale file
  file=$dir/$(record_field "$dir" database file)
  for rep in $(seq 1 "$REPS"); do
    log "scale $scale, rep $rep/$REPS: verify"
    rep_begin; timed env "${SB_ENV[@]}" POSTGRES_DB="$db" BACKUP_DIR="$dir" "$SB" verify "$file"; rep_end sb-verify -
    rep_begin; timed bash -c 'set -o pipefail; gunzip -c "$1" | sha256sum' _ "$file"; rep_end base-verify -
    # The same work with the plain checksum stackback keeps (BLAKE3): a reference row, no target.
    rep_begin; timed bash -c 'set -o pipefail; gunzip -c "$1" | b3sum' _ "$file"; rep_end base-verify-b3 -
  done
  row_add sb-verify "$work, verify gzip" "stackback verify FILE" "$plain"
  row_add base-verify "$work, verify gzip" "gunzip -c | sha256sum" "$plain" sb-verify
  row_add base-verify-b3 "$work, verify gzip" "gunzip -c | b3sum (reference)" "$plain" sb-verify

  # Every restore starts from the same state (untimed): no restore_target, a checkpoint. The
  # baseline and stackback's one-transaction load need an empty database made first (untimed);
  # stackback's default restore makes its own (--create, inside its timing), which lets it load
  # rows over several connections and drop the database if the load fails.
  no_target() {
    PGOPTIONS="-c client_min_messages=warning" "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS restore_target WITH (FORCE)" -c "CHECKPOINT"
  }
  fresh_target() {
    no_target
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE restore_target"
  }
  for rep in $(seq 1 "$REPS"); do
    log "scale $scale, rep $rep/$REPS: restore db"
    no_target
    rep_begin; timed env "${SB_ENV[@]}" POSTGRES_DB="$db" BACKUP_DIR="$dir" "$SB" restore db "$file" --target-db restore_target --create
    rep_end sb-restore -
    fresh_target
    rep_begin; timed bash -c 'set -o pipefail; gunzip -c "$1" | "${@:2}"' _ "$file" "${PSQL[@]}" -d restore_target
    rep_end base-restore -
    fresh_target
    rep_begin; timed env "${SB_ENV[@]}" POSTGRES_DB="$db" BACKUP_DIR="$dir" "$SB" restore db "$file" --target-db restore_target --jobs 1
    rep_end sb-restore-1tx -
  done
  "${PSQL[@]}" -d postgres -c "DROP DATABASE restore_target"
  row_add sb-restore "$work, restore db" "stackback restore db --create" "$plain"
  row_add base-restore "$work, restore db" "gunzip -c | psql" "$plain" sb-restore
  row_add sb-restore-1tx "$work, restore db" "stackback restore db --jobs 1 (one transaction, reference)" "$plain"
}

# profile DB COMPRESSION: perf of one database run; the report is printed after the tables.
profile() {
  log "perf record of stackback run ($2, $1)"
  rm -rf "$WORK/sb-perf"; mkdir -p "$WORK/sb-perf"
  quiet perf-record env "${SB_ENV[@]}" POSTGRES_DB="$1" BACKUP_DIR="$WORK/sb-perf" BACKUP_COMPRESSION="$2" \
    perf record -g -o "$WORK/perf-$2.data" -- "$SB" run
  # To a file first: `perf report | head` would make perf die of SIGPIPE under pipefail.
  perf report -i "$WORK/perf-$2.data" --stdio --no-children --sort comm,dso,sym -g none --percent-limit 1.5 \
    > "$WORK/perf-report-$2.txt" 2>"$WORK/logs/perf-report.log" \
    || { cat "$WORK/logs/perf-report.log" >&2; die "perf report failed"; }
  PROFILED+=("$2")
}

# --- bucket ----------------------------------------------------------------------------------------

bench_bucket() {
  local s3port; s3port=$(free_port)
  log "Garage on 127.0.0.1:$s3port"
  garage_start "$WORK/garage" "$s3port"
  local endpoint=http://127.0.0.1:$s3port
  # A bucket run backs up the database too: an empty one, as bench/bucket_backup.sh does.
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE app"
  local s3env=(POSTGRES_DB=app MINIO_ENDPOINT="$endpoint" MINIO_ACCESS_KEY="$GARAGE_KEY_ID"
    MINIO_SECRET_KEY="$GARAGE_SECRET" MINIO_REGION=garage MINIO_BUCKET=bench BACKUP_COMPRESSION=gzip)
  # rclone, configured by its environment alone (remote "src:"), never by a user's rclone.conf.
  export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_SRC_TYPE=s3 RCLONE_CONFIG_SRC_PROVIDER=Other \
    RCLONE_CONFIG_SRC_ENDPOINT="$endpoint" RCLONE_CONFIG_SRC_ACCESS_KEY_ID="$GARAGE_KEY_ID" \
    RCLONE_CONFIG_SRC_SECRET_ACCESS_KEY="$GARAGE_SECRET" RCLONE_CONFIG_SRC_REGION=garage \
    RCLONE_CONFIG_SRC_FORCE_PATH_STYLE=true

  log "bucket: $OBJECTS PDF-like objects"
  local stats n bytes text image
  stats=$(env S3_ENDPOINT="$endpoint" AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" \
    AWS_DEFAULT_REGION=garage "$VENV_PY" "$ROOT/bench/dataset.py" pdfs bench "$OBJECTS")
  read -r n bytes text image <<< "$stats"
  DATASETS+=("bucket: $n PDF-like objects of 20-300 KiB, $(( bytes / 1000000 )) MB ($text text-heavy, $image image-heavy)")

  local rep dir=$WORK/sb-bucket local_dir=$WORK/rclone-local
  for rep in $(seq 1 "$REPS"); do
    log "bucket, rep $rep/$REPS: backup"
    rep_begin; sb_run "$dir" "${s3env[@]}"
    [ "$(record_field "$dir" objects objects)" -eq "$n" ] || die "the bucket run did not back up $n objects"
    rep_end sb-bucket "$(bytes_of "$dir"/minio_*)"
    rm -rf "$local_dir" "$WORK/bucket.tar.gz"
    rep_begin
    timed rclone copy --transfers 16 src:bench "$local_dir"
    timed tar czf "$WORK/bucket.tar.gz" -C "$local_dir" .
    rep_end base-rclone-tar "$(bytes_of "$WORK/bucket.tar.gz")"
    # The server's files as they lie (blocks, which Garage stores zstd-compressed, and its
    # metadata): what a volume-level backup of an idle server would archive.
    rep_begin; timed tar czf "$WORK/garage.tar.gz" -C "$WORK/garage" data meta
    rep_end base-garage-tar "$(bytes_of "$WORK/garage.tar.gz")"
  done
  rm -f "$WORK/bucket.tar.gz" "$WORK/garage.tar.gz"
  row_add sb-bucket "bucket backup" "stackback run" "$bytes"
  row_add base-rclone-tar "bucket backup" "rclone copy + tar czf" "$bytes" sb-bucket
  row_add base-garage-tar "bucket backup" "tar czf of Garage's data dir" "$bytes" sb-bucket

  # Restores into a new bucket each time (Garage keeps identical blocks once, for both tools alike).
  for rep in $(seq 1 "$REPS"); do
    log "bucket, rep $rep/$REPS: restore objects"
    rep_begin; timed env "${SB_ENV[@]}" "${s3env[@]}" BACKUP_DIR="$dir" "$SB" restore objects latest --bucket "restore-sb-$rep" --create-bucket
    rep_end sb-restore-objects -
    rep_begin; timed rclone copy --transfers 16 "$local_dir" "src:restore-rclone-$rep"; rep_end base-restore-objects -
  done
  row_add sb-restore-objects "bucket restore" "stackback restore objects" "$bytes"
  row_add base-restore-objects "bucket restore" "rclone copy (local dir up)" "$bytes" sb-restore-objects
}

# --- targets ---------------------------------------------------------------------------------------

TARGETS=()
# target NAME MEASURED GOAL UNIT: met when MEASURED <= GOAL.
# MEASURED comes unrounded, so that 64.02 MiB is not shown as 64.0 and passed as met.
target() {
  local shown met
  shown=$(awk -v m="$2" 'BEGIN { printf "%.2f", m }')
  met=$(awk -v m="$2" -v g="$3" 'BEGIN { print (m <= g ? "yes" : "NO") }')
  TARGETS+=("| $1 | $shown$4 | <= $3$4 | $met |")
}
rss_mib() { awk -v k="$(field "$1" 3)" 'BEGIN { printf "%.6f", k / 1024 }'; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }

collect_targets() {
  local s
  if [ "$SKIP_DB" -eq 0 ]; then
    for s in $DB_SCALES; do
      target "database gzip, scale $s: wall vs pg_dump \\| gzip -6" "$(ratio "$(wall sb-gzip-$s)" "$(wall base-gzip-$s)" 6)" 0.5 x
      target "database gzip, scale $s: size vs gzip -6" "$(ratio "$(field sb-gzip-$s 4)" "$(field base-gzip-$s 4)" 6)" 1.05 x
      target "database zstd, scale $s: wall vs pg_dump > /dev/null" "$(ratio "$(wall sb-zstd-$s)" "$(wall base-null-$s)" 6)" 1.15 x
    done
    target "verify, scale $LARGEST_SCALE: wall vs gunzip -c \\| sha256sum" "$(ratio "$(wall sb-verify)" "$(wall base-verify)" 6)" 0.5 x
    target "restore db, scale $LARGEST_SCALE: wall vs gunzip -c \\| psql" "$(ratio "$(wall sb-restore)" "$(wall base-restore)" 6)" 1.0 x
  fi
  if [ "$SKIP_BUCKET" -eq 0 ]; then
    target "bucket backup: wall vs rclone copy + tar czf" "$(ratio "$(wall sb-bucket)" "$(wall base-rclone-tar)" 6)" 0.5 x
    target "bucket backup: wall vs tar czf of the data dir" "$(ratio "$(wall sb-bucket)" "$(wall base-garage-tar)" 6)" 1.0 x
    target "restore objects: wall vs rclone copy" "$(ratio "$(wall sb-restore-objects)" "$(wall base-restore-objects)" 6)" 1.0 x
  fi
  if [ "$SKIP_DB" -eq 0 ]; then
    for s in $DB_SCALES; do
      local ids=("sb-gzip-$s" "sb-zstd-$s")
      [ "$s" != "$LARGEST_SCALE" ] || ids+=(sb-age-gzip sb-age-zstd)
      local r=() id
      for id in "${ids[@]}"; do r+=("$(rss_mib "$id")"); done
      target "peak RSS, database runs, scale $s" "$(max_of "${r[@]}")" 64 " MiB"
    done
  fi
  if [ "$SKIP_BUCKET" -eq 0 ]; then
    target "peak RSS, bucket run" "$(rss_mib sb-bucket)" 128 " MiB"
  fi
}

# --- report ----------------------------------------------------------------------------------------

print_table() {
  echo "| work | tool | wall s | CPU s (user+sys) | peak RSS MiB | output MB | MB/s (plain input MB / wall) | ratio (stackback wall / baseline wall) |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  local id w r
  for id in "${ROW_IDS[@]}"; do
    w=$(wall "$id"); r="-"
    [ -z "${R_VS[$id]}" ] || r=$(ratio "$(wall "${R_VS[$id]}")" "$w")
    awk -v work="${R_WORK[$id]}" -v tool="${R_TOOL[$id]}" -v w="$w" -v u="$(field "$id" 1)" -v s="$(field "$id" 2)" \
      -v m="$(field "$id" 3)" -v o="$(field "$id" 4)" -v p="${R_PLAIN[$id]}" -v r="$r" 'BEGIN {
      gsub(/\|/, "\\|", tool)
      printf "| %s | %s | %.1f | %.1f | %.1f | %s | %.1f | %s |\n", work, tool, w, u + s, m / 1024,
        (o == "-" ? "-" : sprintf("%.1f", o / 1e6)), (w > 0 ? p / 1e6 / w : 0), r }'
  done
}

[ "$SKIP_DB" -eq 1 ] || for s in $DB_SCALES; do bench_db "$s"; done
[ "$SKIP_BUCKET" -eq 1 ] || bench_bucket
collect_targets

echo
echo "$MACHINE"
printf 'dataset:   %s\n' "${DATASETS[@]}"
echo
print_table
echo
echo "| target | measured ratio | goal | met? |"
echo "|---|---:|---:|---|"
printf '%s\n' "${TARGETS[@]}"
if [ "$SKIP_DB" -eq 0 ]; then
  echo
  echo "The ratio of each repetition (stackback, then its baseline, back to back):"
  for s in $DB_SCALES; do
    echo "- scale $s, gzip vs pg_dump | gzip -6: $(pairs "sb-gzip-$s" "base-gzip-$s")"
    echo "- scale $s, zstd vs pg_dump > /dev/null: $(pairs "sb-zstd-$s" "base-null-$s")"
    echo "- scale $s, pg_dump | zstd -1 -T0 vs pg_dump > /dev/null (reference): $(pairs "base-zstd-$s" "base-null-$s")"
  done
  echo "- scale $LARGEST_SCALE, verify vs gunzip -c | sha256sum: $(pairs sb-verify base-verify)"
  echo "- scale $LARGEST_SCALE, restore db vs gunzip -c | psql: $(pairs sb-restore base-restore)"
  echo "- scale $LARGEST_SCALE, restore db --jobs 1 (one transaction) vs gunzip -c | psql (reference): $(pairs sb-restore-1tx base-restore)"
fi
for c in "${PROFILED[@]}"; do
  echo
  echo "perf report (stackback run, $c, scale $FIRST_SCALE; stackback's own threads):"
  grep -v '^#' "$WORK/perf-report-$c.txt" | grep -v '^$' | head -n 25
done
