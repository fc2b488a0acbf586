//! A database dump back into PostgreSQL, or out into a plain SQL file.
//!
//! Into a database that already existed (empty), the dump runs through psql in one transaction,
//! stopping at the first error: nothing is committed unless all is. Into a database this restore
//! made (with `--create`, or beside a target `--clean` replaces), the rows load over several
//! connections ([`super::parallel`]) and a failed load drops that database: the same all or
//! nothing, for the operator, at the speed of every core the server has.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::catalog::{ArtifactKind, ArtifactRecord};
use crate::config::{Config, PostgresConfig};
use crate::error::{Error, Problem, Result};
use crate::ops::Selector;
use crate::redact::Redactor;
use crate::sink::local::BackupDir;
use crate::source::copyrows::CopyRows;
use crate::source::postgres::{self, connect, quote_ident, sql_err, ToolSearch};

#[derive(Debug, Clone, Default)]
pub struct DbRestoreOptions {
    /// Database to restore into (default: the one the backup came from).
    pub target_db: Option<String>,
    /// Another server: `postgres://user:pass@host:port/db`.
    pub target_url: Option<String>,
    /// Create the target database when it does not exist.
    pub create: bool,
    /// Drop and recreate a target that already holds tables (needs `yes`).
    pub clean: bool,
    pub yes: bool,
    /// Leave out `ALTER ... OWNER TO` statements (a fresh server without the original roles).
    pub no_owner: bool,
    /// Write the plain SQL here instead of restoring.
    pub to_file: Option<PathBuf>,
    /// Connections loading rows into a database this restore makes (default: [`default_jobs`]);
    /// 1 loads in one psql transaction.
    pub jobs: Option<usize>,
}

/// This host's cores, between 1 and 4: the server's parsing of rows is the load's work, and past
/// four connections on a shared server the gain is small against the load it puts on others.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

#[derive(Debug, Clone, Default)]
pub struct DbRestoreReport {
    pub artifact: String,
    /// The database restored into, or the file written.
    pub target: String,
    pub tables: u64,
    pub rows: u64,
    pub plain_bytes: u64,
    /// Connections that loaded rows (1 for a load through psql alone; 0 for a file).
    pub connections: usize,
    pub seconds: f64,
}

/// Where a load goes: straight into an empty target that existed; into a new database under a
/// scratch name, which takes the target's name once the load succeeded (`--create`); or into a
/// new database beside a target that holds data, which replaces the target only once the load
/// succeeded. A half-loaded database never carries the target's name, even if stackback is killed.
enum Landing {
    Existing,
    Made { new: String },
    Aside { new: String, old: String },
}

/// Names beside `db` for the new copy and the old one, within PostgreSQL's 63-byte names.
fn aside_names(db: &str) -> (String, String) {
    let suffix = format!("_stackback_{}", std::process::id());
    let mut keep = 63 - suffix.len() - 4;
    while !db.is_char_boundary(keep.min(db.len())) {
        keep -= 1;
    }
    let stem = &db[..keep.min(db.len())];
    (format!("{stem}{suffix}_new"), format!("{stem}{suffix}_old"))
}

/// Restores a database backup: into a database (all or nothing, see the module's docs), or into a
/// plain SQL file.
///
/// When `stop` completes (SIGINT, SIGTERM) before the load is done, the restore is abandoned and
/// a database it made is dropped; once loaded, the swap into place is finished regardless.
pub async fn restore_db(
    cfg: &Config,
    sel: &Selector,
    opts: &DbRestoreOptions,
    stop: impl std::future::Future<Output = String>,
) -> Result<DbRestoreReport> {
    let t0 = Instant::now();
    tokio::pin!(stop);
    let dir = BackupDir::open(&cfg.backup_dir())?;
    let proving = super::proven(cfg, &dir, ArtifactKind::Database, sel);
    let proven = tokio::select! {
        p = proving => p,
        why = &mut stop => Err(Error::step(STOPPED, format!("{why}; nothing was touched"))),
    };
    let (a, stored) = proven?
        .into_iter()
        .next()
        .expect("a selection holds at least one artifact");
    let archive = dir.join(&a.file);
    if let Some(out) = &opts.to_file {
        let (archive, out2, stored) = (archive.clone(), out.clone(), stored.clone());
        let plain_bytes =
            crate::ops::blocking("writing SQL", move || write_plain(&archive, &stored, &out2))
                .await?;
        return Ok(DbRestoreReport {
            artifact: a.file,
            target: out.display().to_string(),
            plain_bytes,
            seconds: t0.elapsed().as_secs_f64(),
            ..Default::default()
        });
    }
    let base = cfg.postgres()?;
    let mut pg = match &opts.target_url {
        Some(u) => base.with_url(u)?,
        None => base.clone(),
    };
    pg.db = opts
        .target_db
        .clone()
        .or_else(|| opts.target_url.as_ref().map(|_| pg.db.clone()))
        .unwrap_or_else(|| a.source.clone());
    let prepared = tokio::select! {
        p = prepare_target(&pg, opts) => p,
        why = &mut stop => {
            // The scratch name may just have been created; it is this process's alone.
            let gone = drop_database(&pg, &aside_names(&pg.db).0).await;
            Err(stopped(why, gone))
        }
    };
    let (server_num, landing) = prepared?;
    // Where the rows go, over how many connections, and which database goes if the load fails:
    // a database stackback did not make is never dropped, so one transaction keeps it as it was.
    let (into, jobs, made) = match &landing {
        Landing::Existing => (pg.clone(), 1, None),
        Landing::Made { new } | Landing::Aside { new, .. } => (
            PostgresConfig {
                db: new.clone(),
                ..pg.clone()
            },
            opts.jobs.unwrap_or_else(default_jobs),
            Some(new),
        ),
    };
    let loading = load(
        cfg,
        &into,
        (&a, &stored),
        &archive,
        server_num,
        opts.no_owner,
        jobs.max(1),
    );
    // A signal stops the load (psql is killed with it, so its transaction rolls back). Ok: the
    // load's own outcome; Err: why it was stopped.
    let outcome = tokio::select! {
        loaded = loading => Ok(loaded),
        why = &mut stop => Err(why),
    };
    // The target was never touched; only a database this restore made goes.
    let loaded = match (outcome, made) {
        (Ok(Ok(loaded)), _) => loaded,
        (Ok(Err(e)), None) => return Err(e),
        (Ok(Err(e)), Some(made)) => {
            drop_database(&pg, made).await;
            return Err(e);
        }
        (Err(why), None) => {
            return Err(Error::step(
                STOPPED,
                format!("{why}; nothing was committed"),
            ))
        }
        (Err(why), Some(made)) => return Err(stopped(why, drop_database(&pg, made).await)),
    };
    match &landing {
        Landing::Existing => {}
        Landing::Made { new } => name(&pg, new).await?,
        Landing::Aside { new, old } => swap(&pg, new, old).await?,
    }
    Ok(DbRestoreReport {
        artifact: a.file,
        target: pg.db,
        tables: loaded.tables,
        rows: loaded.rows,
        plain_bytes: loaded.plain_bytes,
        connections: loaded.connections,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Decides where the load goes: refuses a target that holds tables (unless `--clean --yes`: then
/// a new database beside it), creates a missing one with `--create`. Returns the server's version
/// number too.
async fn prepare_target(pg: &PostgresConfig, opts: &DbRestoreOptions) -> Result<(i32, Landing)> {
    let db = &pg.db;
    let admin = connect(pg, "postgres").await?;
    let owner: Option<String> = admin
        .query(
            "select pg_get_userbyid(datdba) from pg_database where datname = $1",
            &[db],
        )
        .await
        .map_err(sql_err("looking up the target database"))?
        .first()
        .map(|r| r.get(0));
    let server_num: i32 = admin
        .query_one("select current_setting('server_version_num')::int", &[])
        .await
        .map_err(sql_err("asking the server its version"))?
        .get(0);
    let create = |name: &str| format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    let Some(owner) = owner else {
        if !opts.create {
            return Err(Error::NotFound(format!(
                "database {db} does not exist on {}:{}: add --create to create it",
                pg.host, pg.port
            )));
        }
        // Made under a scratch name: it takes the target's name once it is loaded.
        let (new, _) = aside_names(db);
        drop_database(pg, &new).await;
        admin
            .batch_execute(&create(&new))
            .await
            .map_err(sql_err("creating the target database"))?;
        return Ok((server_num, Landing::Made { new }));
    };
    let target = connect(pg, db).await?;
    let tables: i64 = target
        .query_one(
            "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .map_err(sql_err("counting tables in the target"))?
        .get(0);
    drop(target);
    if tables == 0 {
        return Ok((server_num, Landing::Existing));
    }
    if !(opts.clean && opts.yes) {
        return Err(Error::Usage(format!(
            "database {db} already has {tables} tables: refusing to restore over them; add --clean --yes to replace it, or choose another --target-db"
        )));
    }
    // The load goes beside the target, owned as the target is; the target stays until it is in.
    let (new, old) = aside_names(db);
    drop_database(pg, &new).await;
    admin
        .batch_execute(&format!("{} OWNER {}", create(&new), quote_ident(&owner)))
        .await
        .map_err(sql_err("creating the database to restore into"))?;
    tracing::info!(db = %db, scratch = %new, "restoring beside the target; it is replaced once the load succeeded");
    Ok((server_num, Landing::Aside { new, old }))
}

/// Puts `new` in place of `pg.db`: the old database is renamed away (its sessions ended), the new
/// one takes its name, then the old one is dropped. If the new one cannot take the name, the old
/// one gets it back.
async fn swap(pg: &PostgresConfig, new: &str, old: &str) -> Result<()> {
    let db = &pg.db;
    let admin = connect(pg, "postgres").await?;
    let mut attempt = 0;
    loop {
        // Sessions keep a database from being renamed; the restore replaces it anyway.
        admin
            .execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
                &[db],
            )
            .await
            .map_err(sql_err("ending the sessions on the target database"))?;
        match admin.batch_execute(&rename(db, old)).await {
            Ok(()) => break,
            Err(_) if attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => {
                drop_database(pg, new).await;
                return Err(sql_err("moving the old database aside")(e));
            }
        }
    }
    if let Err(e) = admin.batch_execute(&rename(new, db)).await {
        let back = admin.batch_execute(&rename(old, db)).await;
        drop_database(pg, new).await;
        let mut err = sql_err("putting the restored database in place")(e);
        if let (Err(b), Error::Postgres { detail, .. }) = (back, &mut err) {
            detail.push_str(&format!(
                "; and the old database could not get its name back ({}): it is {old}",
                crate::source::postgres::sql_detail(&b)
            ));
        }
        return Err(err);
    }
    drop_database(pg, old).await;
    tracing::info!(db = %db, "the restored database replaced the old one");
    Ok(())
}

/// Drops `name` if it exists; a failure is logged, not fatal (the database is left behind).
/// Returns whether it is gone.
async fn drop_database(pg: &PostgresConfig, name: &str) -> bool {
    let dropped = match connect(pg, "postgres").await {
        Ok(admin) => {
            let force = match admin
                .query_one("select current_setting('server_version_num')::int", &[])
                .await
            {
                Ok(r) if r.get::<_, i32>(0) >= 130000 => " WITH (FORCE)",
                _ => "",
            };
            let sql = format!("DROP DATABASE IF EXISTS {}{force}", quote_ident(name));
            admin
                .batch_execute(&sql)
                .await
                .map_err(|e| crate::source::postgres::sql_detail(&e))
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &dropped {
        tracing::warn!(database = %name, error = %e, "could not drop a database stackback made: drop it by hand");
    }
    dropped.is_ok()
}

/// The step a stopped restore reports.
const STOPPED: &str = "restoring the database";

/// The error of a restore stopped by a signal, saying whether the database it made is gone.
fn stopped(why: String, gone: bool) -> Error {
    Error::step(
        STOPPED,
        if gone {
            format!("{why}; the database it was loading into was dropped")
        } else {
            format!("{why}; the database it was loading into could not be dropped (see the warning above): drop it by hand")
        },
    )
}

fn rename(from: &str, to: &str) -> String {
    format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    )
}

/// Gives the database made under a scratch name the target's name; if that fails (someone made
/// the target meanwhile), the scratch database goes.
async fn name(pg: &PostgresConfig, new: &str) -> Result<()> {
    let admin = connect(pg, "postgres").await?;
    let renamed = admin.batch_execute(&rename(new, &pg.db)).await;
    if let Err(e) = renamed {
        drop_database(pg, new).await;
        return Err(sql_err("giving the restored database its name")(e));
    }
    Ok(())
}

/// What a load fed the server: the plain bytes, and the tables and rows of the dump's COPY blocks.
/// Once the load succeeded they are what was loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loaded {
    pub plain_bytes: u64,
    pub tables: u64,
    pub rows: u64,
    /// Connections that loaded rows.
    pub connections: usize,
}

/// Loads the dump into `pg.db`: with `jobs` 1, streamed into psql in one transaction (psql's exit
/// status decides); with more, over that many connections ([`super::parallel`]), which commit as
/// they go, so only into a database the caller drops if this fails.
pub(crate) async fn load(
    cfg: &Config,
    pg: &PostgresConfig,
    (a, stored): (&ArtifactRecord, &super::Stored),
    archive: &Path,
    server_num: i32,
    no_owner: bool,
    jobs: usize,
) -> Result<Loaded> {
    let search = ToolSearch::system(cfg.postgres()?.pg_dump.clone());
    let tools = search.tools("psql").await?;
    let psql = postgres::select_tool("psql", &tools, Some((server_num / 10000) as u32))?.clone();
    tracing::info!(artifact = %a.file, db = %pg.db, psql = %psql.path.display(), jobs, "restoring database");
    if jobs > 1 {
        let (path, stored) = (archive.to_path_buf(), stored.clone());
        return super::parallel::load(
            move || stored.open(&path),
            &psql,
            pg,
            no_owner,
            jobs,
            &cfg.redactor(),
        )
        .await;
    }
    let (tx, rx) = mpsc::channel(8);
    let path = archive.to_path_buf();
    let stored = stored.clone();
    let reader = std::thread::spawn(move || {
        let mut rows = CopyRows::new();
        // A panic must reach psql as an error: a closed stdin alone would let it commit what it
        // had so far.
        let on_panic = tx.clone();
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_dump(&path, &stored, no_owner, tx, &mut rows)
        }));
        match read {
            Ok(()) => Some(rows.counts()),
            Err(_) => {
                let _ = on_panic.blocking_send(Err(Error::step(
                    "reading the dump",
                    "the reader thread panicked; psql was stopped, nothing was committed",
                )));
                None
            }
        }
    });
    let redactor: Redactor = cfg.redactor();
    let fed =
        crate::source::child::feed_stdin(postgres::psql_command(&psql, pg), "psql", rx, &redactor)
            .await;
    let counted = reader.join().ok().flatten();
    match fed {
        Ok(outcome) => {
            let (tables, rows) = counted.ok_or_else(|| {
                Error::step("reading the dump", "the reader stopped without its counts")
            })?;
            Ok(Loaded {
                plain_bytes: outcome.bytes,
                tables,
                rows,
                connections: 1,
            })
        }
        Err(Error::Child {
            tool,
            status,
            stderr,
            cause,
        }) => Err(Error::Child {
            tool,
            status,
            stderr: format!("{stderr} (the restore ran in one transaction: nothing was committed)"),
            cause,
        }),
        Err(e) => Err(e),
    }
}

/// The blocking side of a load: decompresses the dump and sends it in chunks, leaving out `ALTER
/// ... OWNER TO` lines outside COPY data when `no_owner`, and counts what it sends into `rows`. A
/// dump that cannot be read to the end is sent as an error, so psql is stopped before it could
/// commit.
fn read_dump(
    archive: &Path,
    stored: &super::Stored,
    no_owner: bool,
    tx: mpsc::Sender<Result<Bytes>>,
    rows: &mut CopyRows,
) {
    let unreadable = |e: std::io::Error| {
        Error::verification(
            archive.display(),
            Problem::undecodable(format!(
                "could not be read to the end ({e}); psql was stopped, nothing was committed"
            )),
        )
    };
    let plain = match stored.open(archive) {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    if !no_owner {
        // Nothing to leave out: whole chunks, no line splitting.
        let mut plain = plain;
        loop {
            let mut chunk = vec![0u8; 256 * 1024];
            let n = match crate::pipeline::read_full(&mut plain, &mut chunk) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(unreadable(e)));
                    return;
                }
            };
            chunk.truncate(n);
            rows.feed(&chunk);
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return;
            }
        }
    }
    let mut plain = BufReader::with_capacity(256 * 1024, plain);
    let mut line = Vec::new();
    let mut chunk = Vec::with_capacity(256 * 1024);
    let mut in_copy = false;
    loop {
        line.clear();
        match plain.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(unreadable(e)));
                return;
            }
        }
        if in_copy {
            in_copy = line.as_slice() != b"\\.\n";
        } else if line.starts_with(b"COPY ") && line.ends_with(b"FROM stdin;\n") {
            in_copy = true;
        } else if no_owner
            && line.starts_with(b"ALTER ")
            && line.windows(10).any(|w| w == b" OWNER TO ")
        {
            continue;
        }
        chunk.extend_from_slice(&line);
        if chunk.len() >= 256 * 1024 {
            rows.feed(&chunk);
            if tx
                .blocking_send(Ok(Bytes::from(std::mem::take(&mut chunk))))
                .is_err()
            {
                return;
            }
        }
    }
    if !chunk.is_empty() {
        rows.feed(&chunk);
        let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
    }
}

/// Decompresses into `out` atomically (temp name, fsync, rename), mode 0600.
fn write_plain(archive: &Path, stored: &super::Stored, out: &Path) -> Result<u64> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".stackback-tmp.")
        .tempfile_in(parent)
        .map_err(|e| Error::io("cannot create a temp file in", parent, e))?;
    let mut plain = stored.open(archive)?;
    // Read errors (a damaged or forged stream) and write errors (the disk) are told apart: the
    // temp file is dropped either way, so no partial SQL file is ever left under `out`.
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let got = plain.read(&mut buf).map_err(|e| {
            Error::verification(
                archive.display(),
                Problem::undecodable(format!(
                    "could not be read to the end ({e}); nothing was written"
                )),
            )
        })?;
        if got == 0 {
            break;
        }
        tmp.as_file_mut()
            .write_all(&buf[..got])
            .map_err(|e| Error::io("cannot write", out, e))?;
        n += got as u64;
    }
    tmp.as_file_mut()
        .flush()
        .map_err(|e| Error::io("cannot write", out, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("cannot fsync", out, e))?;
    tmp.persist(out)
        .map_err(|e| Error::io("cannot write", out, e.error))?;
    Ok(n)
}
