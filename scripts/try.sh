#!/usr/bin/env bash
# Try stackback end to end on this machine: installs what it needs, starts a throwaway PostgreSQL
# with sample data, runs a real backup, verifies it, restores it with the seed's own recipe
# (gunzip -c | psql) into a new database and compares the data. Leaves the backups in ./try-backups.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_system_deps
log "building stackback (release)"
cargo build --release --quiet
SB=$PWD/target/release/stackback

WORK=$(mktemp -d /tmp/stackback-try.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
PORT=$(free_port)
PW="try-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
cleanup() { pg_stop "$PGDIR"; rm -rf "$WORK"; }
trap cleanup EXIT

log "starting a throwaway PostgreSQL on 127.0.0.1:$PORT"
pg_start "$PGDIR" "$PORT" "$PW"
export PGPASSWORD=$PW
PSQL=("$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE schedgen"
"${PSQL[@]}" -d schedgen -f tests/support/seed.sql
unset PGPASSWORD

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

log "files in $BACKUP_DIR"
ls -l "$BACKUP_DIR"
log "done: a verified backup is on disk and restores to identical data"
