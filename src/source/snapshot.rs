//! One snapshot for the dump and for the row counts recorded with it.
//!
//! [`Snapshot::export`] opens a `REPEATABLE READ READ ONLY` transaction and exports its snapshot
//! (`pg_export_snapshot()`); pg_dump then runs with `--snapshot=<id>`, so it sees exactly what the
//! transaction sees, and [`Snapshot::count_rows`] counts each table in that same transaction. The
//! exporting transaction must stay open until pg_dump has imported the snapshot: the caller keeps
//! the [`Snapshot`] until pg_dump has exited, then [`Snapshot::release`]s it. A later parallel
//! dump (`pg_dump -j`) reuses the same mechanism.
//!
//! Counting: `count(*)` for tables whose heap (`pg_relation_size`) is at most the exact limit, the
//! planner's estimate (`pg_class.reltuples`) above it, marked `exact: false`. A table never
//! analysed has no estimate (`reltuples` of -1 from PostgreSQL 14 on, 0 before) and is counted.
//!
//! Standbys export snapshots from PostgreSQL 10 on; an older standby cannot, and the caller dumps
//! without a shared snapshot and without counts.

use crate::catalog::TableCount;
use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::source::postgres::{connect, quote_ident, sql_err};

/// The user tables whose data pg_dump dumps: ordinary tables (partitions included, partitioned
/// parents excluded so no row counts twice) outside the system schemas, not temporary, not
/// members of an extension. With each: its heap size and the planner's row estimate.
const TABLES: &str =
    "select n.nspname::text, c.relname::text, pg_relation_size(c.oid), c.reltuples::float8 \
     from pg_class c join pg_namespace n on n.oid = c.relnamespace \
     where c.relkind = 'r' and c.relpersistence <> 't' \
     and n.nspname not in ('pg_catalog', 'information_schema') \
     and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%' \
     and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass \
                     and d.objid = c.oid and d.deptype = 'e') \
     order by 1, 2";

/// An open transaction whose snapshot was exported.
pub struct Snapshot {
    client: tokio_postgres::Client,
    /// What `pg_dump --snapshot` takes.
    pub id: String,
}

impl Snapshot {
    /// Opens the transaction on the configured database and exports its snapshot.
    ///
    /// # Errors
    /// The connection's error; [`Error::Step`] when the server is a standby older than
    /// PostgreSQL 10, which cannot export snapshots.
    pub async fn export(cfg: &PostgresConfig) -> Result<Snapshot> {
        let client = connect(cfg, &cfg.db).await?;
        let row = client
            .query_one(
                "select pg_is_in_recovery(), current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(sql_err("asking whether the server is a standby"))?;
        let (standby, num): (bool, i32) = (row.get(0), row.get(1));
        if standby && num < 100_000 {
            return Err(Error::step(
                "exporting the dump's snapshot",
                "a standby of PostgreSQL older than 10 cannot export snapshots",
            ));
        }
        // The counts wait for a table lock no longer than pg_dump may (BACKUP_LOCK_WAIT_TIMEOUT):
        // a session queued for an exclusive lock must not hold the run.
        let lock_timeout = cfg.lock_wait_timeout.as_millis().max(1);
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL lock_timeout = {lock_timeout}"
            ))
            .await
            .map_err(sql_err("starting the snapshot's transaction"))?;
        let id: String = client
            .query_one("select pg_export_snapshot()", &[])
            .await
            .map_err(sql_err("exporting the dump's snapshot"))?
            .get(0);
        Ok(Snapshot { client, id })
    }

    /// Row counts of every user table in the snapshot: exact up to `exact_limit` bytes of heap.
    pub async fn count_rows(&self, exact_limit: u64) -> Result<Vec<TableCount>> {
        count_tables(&self.client, Some(exact_limit)).await
    }

    /// Ends the transaction (pg_dump must have imported the snapshot by now).
    pub async fn release(self) {
        // A rollback of a read-only transaction: nothing to lose if it fails, the connection
        // closes with the client anyway.
        let _ = self.client.batch_execute("ROLLBACK").await;
    }
}

/// Counts the rows of every user table `client` sees: exactly when its heap is at most
/// `exact_limit` bytes (every table when `None`), else by the planner's estimate.
pub async fn count_tables(
    client: &tokio_postgres::Client,
    exact_limit: Option<u64>,
) -> Result<Vec<TableCount>> {
    let rows = client
        .query(TABLES, &[])
        .await
        .map_err(sql_err("listing the tables to count"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (schema, name): (String, String) = (r.get(0), r.get(1));
        let heap: i64 = r.get(2);
        let estimate: f64 = r.get(3);
        let big = exact_limit.is_some_and(|l| heap.max(0) as u64 > l);
        let (rows, exact) = if big && estimate > 0.0 {
            (estimate.round() as u64, false)
        } else {
            (count_one(client, &schema, &name).await?, true)
        };
        out.push(TableCount {
            schema,
            name,
            rows,
            exact,
        });
    }
    Ok(out)
}

/// `count(*)` of one table, its name quoted (names come from the catalog or a run record).
pub async fn count_one(client: &tokio_postgres::Client, schema: &str, name: &str) -> Result<u64> {
    let sql = format!(
        "select count(*) from {}.{}",
        quote_ident(schema),
        quote_ident(name)
    );
    let n: i64 = client
        .query_one(&sql, &[])
        .await
        .map_err(sql_err("counting rows"))?
        .get(0);
    Ok(n.max(0) as u64)
}
