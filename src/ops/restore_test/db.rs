//! The database half of a restore test: a scratch database on the scratch server, the dump loaded
//! into it as an operator would after a loss (psql, ON_ERROR_STOP, one transaction, owners and
//! all), its tables counted and compared with the counts recorded at backup time.
//!
//! The scratch database is created from `template0`, and dropped by [`drop_scratch`] whatever
//! happened; scratch databases that a killed test left (names checked by
//! [`super::compare::is_scratch_db`]) are dropped by [`drop_leftovers`] before a test starts.
//! From PostgreSQL 13 on `DROP DATABASE ... WITH (FORCE)` ends sessions still in it; before, they
//! are terminated first.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::compare::{compare, is_scratch_db};
use crate::catalog::{ArtifactRecord, DbTestResult, TableCount};
use crate::config::{Config, PostgresConfig};
use crate::error::{Error, Problem, Result, ScratchRefusal};
use crate::sink::local::BackupDir;
use crate::source::postgres::{connect, quote_ident, sql_detail, sql_err};
use crate::source::snapshot::count_tables;

/// The scratch server: where admin statements run, and its version.
pub(super) struct Scratch {
    pub admin: PostgresConfig,
    pub server_num: i32,
    /// `host:port`, for reports.
    pub server: String,
}

impl Scratch {
    /// Connects to the scratch server and asks its version.
    ///
    /// # Errors
    /// [`Error::ScratchRefused`] when it cannot be reached or refuses the login.
    pub async fn open(admin: PostgresConfig) -> Result<Scratch> {
        let server = format!("{}:{}", admin.host, admin.port);
        let refused = |e: Error| Error::ScratchRefused {
            refusal: ScratchRefusal::Connect,
            server: server.clone(),
            what: format!("a connection as {}", admin.user),
            detail: e.to_string(),
            user: admin.user.clone(),
        };
        let client = connect(&admin, &admin.db).await.map_err(refused)?;
        let server_num: i32 = client
            .query_one("select current_setting('server_version_num')::int", &[])
            .await
            .map_err(sql_err("asking the scratch server its version"))?
            .get(0);
        Ok(Scratch {
            admin,
            server_num,
            server,
        })
    }

    /// The connection settings of database `name` on the scratch server.
    pub fn db(&self, name: &str) -> PostgresConfig {
        PostgresConfig {
            db: name.to_string(),
            ..self.admin.clone()
        }
    }

    /// Creates the scratch database.
    ///
    /// # Errors
    /// [`Error::ScratchRefused`] when the user may not create databases there.
    pub async fn create(&self, name: &str) -> Result<()> {
        let client = connect(&self.admin, &self.admin.db).await?;
        let sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
        client.batch_execute(&sql).await.map_err(|e| {
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                Error::ScratchRefused {
                    refusal: ScratchRefusal::CreateDatabase,
                    server: self.server.clone(),
                    what: format!("to create database {name}"),
                    detail: sql_detail(&e),
                    user: self.admin.user.clone(),
                }
            } else {
                sql_err("creating the scratch database")(e)
            }
        })
    }
}

/// Drops every scratch database a killed test left on the server.
pub(super) async fn drop_leftovers(s: &Scratch) -> Result<Vec<String>> {
    let client = connect(&s.admin, &s.admin.db).await?;
    let names: Vec<String> = client
        .query(
            "select datname::text from pg_database where datname like 'stackback\\_restore\\_test\\_%'",
            &[],
        )
        .await
        .map_err(sql_err("listing leftover scratch databases"))?
        .iter()
        .map(|r| r.get(0))
        .filter(|n: &String| is_scratch_db(n))
        .collect();
    for n in &names {
        tracing::info!(database = %n, "dropping a scratch database a killed restore test left");
        drop_scratch(s, n).await?;
    }
    Ok(names)
}

/// Drops a scratch database, ending the sessions still in it; a database that is not there is
/// fine.
pub(super) async fn drop_scratch(s: &Scratch, name: &str) -> Result<()> {
    debug_assert!(is_scratch_db(name));
    let client = connect(&s.admin, &s.admin.db).await?;
    let force = s.server_num >= 130_000;
    let sql = format!(
        "DROP DATABASE IF EXISTS {}{}",
        quote_ident(name),
        if force { " WITH (FORCE)" } else { "" }
    );
    let mut attempt = 0;
    loop {
        if !force {
            client
                .execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(sql_err("ending the sessions in the scratch database"))?;
        }
        match client.batch_execute(&sql).await {
            Ok(()) => return Ok(()),
            // A session ended a moment ago may still be leaving (before PostgreSQL 13).
            Err(e) if attempt < 20 && e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(sql_err("dropping the scratch database")(e)),
        }
    }
}

/// Loads the dump into the scratch database `name` and compares its tables with `recorded`.
/// Fills `found` as it learns, so a failure still reports what was seen.
///
/// # Errors
/// [`Error::Verification`] with [`Problem::RestoreLoad`] when psql fails, [`Problem::RowCounts`]
/// when counts differ; other errors when the test itself could not go on.
pub(super) async fn load_and_compare(
    cfg: &Config,
    dir: &BackupDir,
    s: &Scratch,
    name: &str,
    (a, stored): (&ArtifactRecord, &crate::ops::restore::Stored),
    recorded: Option<&[TableCount]>,
    found: &mut Option<DbTestResult>,
) -> Result<Vec<TableCount>> {
    let target = s.db(name);
    let archive = dir.join(&a.file);
    *found = Some(DbTestResult {
        artifact: a.file.clone(),
        tables: 0,
        rows: 0,
        compared: 0,
        mismatches: Vec::new(),
    });
    let loaded =
        // One transaction on one connection: a test runs in the background, beside the
        // production load, and need not be quick.
        crate::ops::restore::db::load(cfg, &target, (a, stored), &archive, s.server_num, false, 1)
            .await;
    match loaded {
        Ok(_) => {}
        Err(Error::Child { stderr, .. }) => {
            return Err(Error::verification(
                &a.file,
                Problem::RestoreLoad {
                    detail: cfg.redactor().redact(stderr.trim()),
                },
            ))
        }
        Err(e) => return Err(e),
    }
    let client = connect(&target, name).await?;
    let restored = count_tables(&client, None).await?;
    let result = found.as_mut().expect("set above");
    result.tables = restored.len() as u64;
    result.rows = restored.iter().map(|t| t.rows).sum();
    if let Some(recorded) = recorded {
        result.compared = recorded.len() as u64;
        result.mismatches = compare(recorded, &restored);
    }
    if !result.mismatches.is_empty() {
        return Err(Error::verification(
            &a.file,
            Problem::RowCounts {
                tables: result.mismatches.len(),
                detail: mismatch_detail(&result.mismatches),
            },
        ));
    }
    Ok(restored)
}

/// The first few mismatches, as people read them.
fn mismatch_detail(mismatches: &[crate::catalog::RowMismatch]) -> String {
    let n = |v: Option<u64>| v.map_or_else(|| "missing".to_string(), |n| n.to_string());
    let mut s = mismatches
        .iter()
        .take(5)
        .map(|m| {
            format!(
                "{} recorded {}{}, restored {}",
                m.table,
                n(m.recorded),
                if m.exact { "" } else { " (estimate)" },
                n(m.restored)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if mismatches.len() > 5 {
        s.push_str(&format!("; and {} more", mismatches.len() - 5));
    }
    s
}
