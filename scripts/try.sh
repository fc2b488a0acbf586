#!/usr/bin/env bash
# Try stackback end to end on this machine: installs what it needs, starts a throwaway PostgreSQL
# with sample data and a throwaway S3 server (moto) with a sample bucket, runs a real backup,
# verifies it, restores the database with the seed's own recipe (gunzip -c | psql) and the bucket
# with `stackback restore objects`, and compares the data. Leaves the backups in ./try-backups.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_system_deps
ensure_venv
ensure_moto
log "building stackback (release)"
cargo build --release --quiet
SB=$PWD/target/release/stackback

WORK=$(mktemp -d /tmp/stackback-try.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
PORT=$(free_port)
PW="try-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
MOTO_PID=
cleanup() { pg_stop "$PGDIR"; [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

log "starting a throwaway PostgreSQL on 127.0.0.1:$PORT"
pg_start "$PGDIR" "$PORT" "$PW"
export PGPASSWORD=$PW
PSQL=("$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE schedgen"
"${PSQL[@]}" -d schedgen -f tests/it/support/seed.sql
unset PGPASSWORD

# A throwaway S3 server (moto: the lightest real one) with a bucket of sample "PDFs".
S3PORT=$(free_port)
log "starting a throwaway S3 server (moto) on 127.0.0.1:$S3PORT"
"$STACKBACK_VENV/bin/moto_server" -H 127.0.0.1 -p "$S3PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$S3PORT") 2>/dev/null && break; sleep 0.2; done
export MINIO_ENDPOINT=http://127.0.0.1:$S3PORT MINIO_ROOT_USER=minioadmin MINIO_ROOT_PASSWORD=minio-secret-key MINIO_BUCKET=schedgen-pdfs
S3=(env S3_ENDPOINT="$MINIO_ENDPOINT" AWS_ACCESS_KEY_ID=$MINIO_ROOT_USER AWS_SECRET_ACCESS_KEY=$MINIO_ROOT_PASSWORD AWS_DEFAULT_REGION=us-east-1 "$VENV_PY" tests/it/support/s3tool.py)
"${S3[@]}" populate schedgen-pdfs --bulk 200

# Only the seed's variables: this is all an operator has to set.
export POSTGRES_HOST=127.0.0.1 POSTGRES_PORT=$PORT POSTGRES_USER=postgres POSTGRES_PASSWORD=$PW POSTGRES_DB=schedgen
export BACKUP_DIR=$PWD/try-backups

log "stackback run"
"$SB" run
log "stackback verify"
"$SB" verify
FILE=$(ls -t "$BACKUP_DIR"/db_schedgen_*.sql.gz | head -n 1)
log "the seed's manual checks: gunzip -t $FILE"
gunzip -t "$FILE" && echo "gunzip -t: ok"

log "restoring with the seed's recipe into a new database"
export PGPASSWORD=$PW
"${PSQL[@]}" -d postgres -c "CREATE DATABASE schedgen_restored"
gunzip -c "$FILE" | "${PSQL[@]}" -d schedgen_restored >/dev/null
count() { "${PSQL[@]}" -d "$1" -tA -c "select (select count(*) from users) || ' users, ' || (select count(*) from orders) || ' orders, md5 ' || (select md5(string_agg(o::text, '|' order by o.id)) from orders o)"; }
ORIG=$(count schedgen); BACK=$(count schedgen_restored)
echo "original: $ORIG"
echo "restored: $BACK"
[ "$ORIG" = "$BACK" ] || { echo "restored data differs" >&2; exit 1; }
unset PGPASSWORD

log "the seed's manual check of the bucket archive: tar -tzf"
ARCHIVE=$(ls -t "$BACKUP_DIR"/minio_schedgen-pdfs_*.tar.gz | head -n 1)
tar -tzf "$ARCHIVE" > "$WORK/entries.txt"
awk '!/^\.stackback\// && n++ < 5' "$WORK/entries.txt"; echo "... $(wc -l < "$WORK/entries.txt") entries"
log "restoring the bucket into a new bucket and reading every object back"
"$SB" restore objects latest --bucket schedgen-pdfs-restored --create-bucket --verify
"${S3[@]}" dump schedgen-pdfs > "$WORK/before.jsonl"
"${S3[@]}" dump schedgen-pdfs-restored > "$WORK/after.jsonl"
diff -q "$WORK/before.jsonl" "$WORK/after.jsonl" >/dev/null || { echo "restored bucket differs" >&2; exit 1; }
echo "bucket restored: all $(wc -l < "$WORK/after.jsonl") objects identical (bytes, content type, metadata), checked with boto3"

log "files in $BACKUP_DIR"
ls -l "$BACKUP_DIR"
log "done: verified database and bucket backups are on disk and restore to identical data"
