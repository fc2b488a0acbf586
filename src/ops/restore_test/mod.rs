//! Restore tests: proof that a backup comes back, not only that its file is intact.
//!
//! [`run`] takes one run (a run id or `latest`), proves its artifacts' checksums, then on the
//! scratch PostgreSQL server (`BACKUP_RESTORE_TEST_URL`, default the source server) loads the dump
//! into a new scratch database and compares each table's rows with the counts recorded at backup
//! time ([`db`]), and for each bucket archive uploads a sample of objects (all with `--full`) into
//! a scratch bucket on the source S3 server and reads them back ([`objects`]). The scratch
//! database and buckets are dropped whatever happened: after a failure, at
//! `BACKUP_RESTORE_TEST_TIMEOUT`, and when `stop` completes (SIGTERM, SIGINT, the daemon's
//! shutdown); those a killed test left are dropped before the next test starts. Names and
//! comparisons are pure functions in [`compare`].
//!
//! The result goes into the run record's `restore_test` section (rewritten atomically, under the
//! directory lock, with a fresh self-checksum) and into `.stackback-state.json`, which keeps the
//! last success when the tested run is pruned. A test stopped by a signal records nothing: it
//! learnt nothing about the backup. [`job`] adds what people hear: an alert when it failed, and a
//! metrics push.

pub mod compare;
mod db;
mod objects;
mod save;

use std::time::Instant;

use chrono::Utc;

use crate::catalog::{
    recorded_tables, ArtifactKind, ArtifactRecord, BucketTestResult, Catalog, DbTestResult,
    RestoreTestRecord, RunId, RunRecord, TableCount,
};
use crate::config::{Config, PostgresConfig, RestoreTestConfig};
use crate::error::{Error, Problem, Result};
use crate::notify::metrics::DaemonCounters;
use crate::notify::NotifyReport;
use crate::ops::restore::Stored;
use crate::ops::Selector;
use crate::sink::local::BackupDir;

pub use compare::{is_scratch_bucket, is_scratch_db};

/// Held while a test runs, so two tests of one directory never drop each other's scratch.
const TEST_LOCK: &str = ".stackback-restore-test.lock";

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreTestOptions {
    /// Every object of each bucket archive, not a sample.
    pub full: bool,
}

/// A table as the test saw it: recorded at backup time, found after the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLine {
    pub table: String,
    pub recorded: Option<u64>,
    /// Whether the recorded count was exact.
    pub exact: bool,
    pub restored: Option<u64>,
}

/// What a restore test did.
#[derive(Debug)]
pub struct RestoreTestReport {
    pub run_id: RunId,
    /// As recorded in the run's `restore_test` section (unless `recorded` is false).
    pub result: RestoreTestRecord,
    pub tables: Vec<TableLine>,
    /// Scratch databases and buckets of killed tests, dropped before this one.
    pub leftovers: Vec<String>,
    /// Why the test failed: a [`Problem`] of the backup (exit 3), or of the test (exit 1).
    pub error: Option<Error>,
    /// Whether the result was written to the run record and the state file.
    pub recorded: bool,
}

impl RestoreTestReport {
    pub fn exit_code(&self) -> i32 {
        self.error.as_ref().map_or(0, Error::exit_code)
    }
}

/// What the test has learnt so far; kept when it is stopped half-way.
#[derive(Debug, Default)]
struct Findings {
    server: String,
    database: Option<DbTestResult>,
    buckets: Vec<BucketTestResult>,
    restored: Vec<TableCount>,
    leftovers: Vec<String>,
}

/// What the test works on.
struct Plan<'a> {
    cfg: &'a Config,
    rt: &'a RestoreTestConfig,
    dir: &'a BackupDir,
    record: &'a RunRecord,
    database: Vec<(ArtifactRecord, Stored)>,
    buckets: Vec<(ArtifactRecord, Stored)>,
    admin: PostgresConfig,
    full: bool,
}

/// How an attempt ended.
enum Ending {
    Done(Result<()>),
    /// `stop` completed: nothing is recorded.
    Stopped(String),
}

/// Runs one restore test of the run `sel` names and records its result.
///
/// A backup that fails its checksum proof (a damaged or missing file, a run record edited after
/// the fact) fails the test like one that does not load: it is recorded, alerted and exits 3.
///
/// # Errors
/// Only when no test could start: a setting, no such backup, an unreadable run record, another
/// test of this directory running, `stop` during the checksum proof. Everything later is in the
/// report (and its record).
pub async fn run(
    cfg: &Config,
    sel: &Selector,
    opts: &RestoreTestOptions,
    stop: impl std::future::Future<Output = String>,
) -> Result<RestoreTestReport> {
    let rt = cfg.restore_test()?;
    let dir = BackupDir::open(&cfg.backup_dir())?;
    let catalog = Catalog::new(dir.clone());
    let run_id = match sel.pin(&catalog, ArtifactKind::Database)? {
        Selector::Run(id) => id,
        _ => {
            return Err(Error::Usage(
                "verify --restore-test takes a run id or `latest`, not a file".into(),
            ))
        }
    };
    let _test_lock = dir.lock_named(TEST_LOCK)?;
    let record = catalog.load(&run_id)?;
    let admin = cfg
        .postgres()?
        .for_restore_test(rt.url.as_ref().map(|u| u.expose()))?;
    let started = Utc::now();
    let t0 = Instant::now();
    // Proving a large backup's checksums takes a while: a signal meanwhile stops it at once.
    tokio::pin!(stop);
    let proof = tokio::select! {
        p = prove(cfg, &dir, &record) => p,
        why = &mut stop => return Err(Error::step("restore test", why)),
    };
    let (database, buckets, unproven) = match proof {
        Ok((d, b)) => (d, b, None),
        Err(e) => (Vec::new(), Vec::new(), Some(e)),
    };
    let plan = Plan {
        cfg,
        rt,
        dir: &dir,
        record: &record,
        database,
        buckets,
        admin,
        full: opts.full,
    };
    Ok(execute(&plan, (started, t0), unproven, stop).await)
}

/// The run's artifacts, each proven against its recorded checksum; the record must prove itself
/// first (its artifacts' sums are only as good as it is).
async fn prove(
    cfg: &Config,
    dir: &BackupDir,
    record: &RunRecord,
) -> Result<(Vec<(ArtifactRecord, Stored)>, Vec<(ArtifactRecord, Stored)>)> {
    if !record.checksum_ok() {
        return Err(Error::verification(
            record.file_name(),
            Problem::RecordModified,
        ));
    }
    let pinned = Selector::Run(record.run_id.clone());
    let database = crate::ops::restore::proven(cfg, dir, ArtifactKind::Database, &pinned).await?;
    let buckets = match record.good_artifacts(ArtifactKind::Objects).next() {
        Some(_) => crate::ops::restore::proven(cfg, dir, ArtifactKind::Objects, &pinned).await?,
        None => Vec::new(),
    };
    Ok((database, buckets))
}

/// Runs the attempt (unless the backup failed its proof), builds the result, records it unless
/// stopped.
async fn execute(
    plan: &Plan<'_>,
    (started, t0): (chrono::DateTime<Utc>, Instant),
    unproven: Option<Error>,
    stop: impl std::future::Future<Output = String>,
) -> RestoreTestReport {
    let mut f = Findings {
        server: format!("{}:{}", plan.admin.host, plan.admin.port),
        ..Findings::default()
    };
    let ending = match unproven {
        Some(e) => Ending::Done(Err(e)),
        None => attempt(plan, &mut f, stop).await,
    };
    let (error, stopped) = match ending {
        Ending::Done(r) => (r.err(), false),
        Ending::Stopped(why) => (Some(Error::step("restore test", why)), true),
    };
    let redactor = plan.cfg.redactor();
    let result = RestoreTestRecord {
        ok: error.is_none(),
        started_at: started,
        finished_at: Utc::now(),
        duration_ms: t0.elapsed().as_millis() as u64,
        full: plan.full,
        server: f.server.clone(),
        database: f.database.take(),
        buckets: std::mem::take(&mut f.buckets),
        error: error.as_ref().map(|e| {
            let mut t = redactor.redact(&e.to_string());
            if let Some(h) = e.hint() {
                t.push_str(&format!(" (hint: {h})"));
            }
            t
        }),
    };
    let mut report = RestoreTestReport {
        run_id: plan.record.run_id.clone(),
        tables: table_lines(plan, &f.restored),
        leftovers: f.leftovers,
        result,
        error,
        recorded: false,
    };
    if !stopped {
        match save::save(plan.dir, &report.run_id, &report.result).await {
            Ok(()) => report.recorded = true,
            Err(e) => {
                tracing::error!(error = %e, "the restore test's result could not be recorded");
                report.error.get_or_insert(e);
            }
        }
    }
    report
}

/// Opens the scratch server, runs the test bounded by the timeout and `stop`, then drops the
/// scratch database and buckets whatever happened.
async fn attempt(
    plan: &Plan<'_>,
    f: &mut Findings,
    stop: impl std::future::Future<Output = String>,
) -> Ending {
    let scratch = match db::Scratch::open(plan.admin.clone()).await {
        Ok(s) => s,
        Err(e) => return Ending::Done(Err(e)),
    };
    let s3 = if plan.buckets.is_empty() {
        None
    } else {
        match plan
            .cfg
            .objects()
            .and_then(|o| Ok((crate::s3::client(o, None)?, o)))
        {
            Ok(c) => Some(c),
            Err(e) => return Ending::Done(Err(e)),
        }
    };
    let nonce = std::process::id();
    let db_name = compare::scratch_db_name(&plan.record.run_id, nonce);
    let bucket_names: Vec<String> = (0..plan.buckets.len())
        .map(|i| compare::scratch_bucket_name(&plan.record.run_id, nonce, i))
        .collect();
    let timeout = plan.rt.timeout;
    let ending = {
        let work = work(plan, &scratch, s3.as_ref(), &db_name, &bucket_names, f);
        tokio::select! {
            r = work => Ending::Done(r),
            why = stop => Ending::Stopped(why),
            _ = tokio::time::sleep(timeout) => Ending::Done(Err(Error::step(
                "restore test",
                format!("stopped: it exceeded BACKUP_RESTORE_TEST_TIMEOUT ({} s)", timeout.as_secs()),
            ))),
        }
    };
    let cleaned = cleanup(
        &scratch,
        s3.as_ref().map(|(c, _)| c),
        &db_name,
        &bucket_names,
    )
    .await;
    match (ending, cleaned) {
        (Ending::Done(Ok(())), Err(e)) => Ending::Done(Err(e)),
        (ending, _) => ending,
    }
}

/// Drops the scratch database and buckets; the first error, after trying them all.
async fn cleanup(
    scratch: &db::Scratch,
    s3: Option<&aws_sdk_s3::Client>,
    db_name: &str,
    buckets: &[String],
) -> Result<()> {
    let mut first = db::drop_scratch(scratch, db_name).await.err();
    if let Some(c) = s3 {
        for b in buckets {
            if let Err(e) = objects::remove_bucket(c, b).await {
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = &first {
        tracing::error!(error = %e, database = %db_name, "could not drop the restore test's scratch: the next test drops it");
    }
    first.map_or(Ok(()), Err)
}

/// The test proper: leftovers dropped, the database loaded and compared, then each bucket
/// archive sampled. Every artifact is tested even when one fails; the first error is returned.
async fn work(
    plan: &Plan<'_>,
    scratch: &db::Scratch,
    s3: Option<&(aws_sdk_s3::Client, &crate::config::ObjectsConfig)>,
    db_name: &str,
    bucket_names: &[String],
    f: &mut Findings,
) -> Result<()> {
    match db::drop_leftovers(scratch).await {
        Ok(names) => f.leftovers.extend(names),
        Err(e) => tracing::warn!(error = %e, "could not look for leftover scratch databases"),
    }
    if let Some((c, _)) = s3 {
        match objects::remove_leftovers(c).await {
            Ok(names) => f.leftovers.extend(names),
            Err(e) => tracing::warn!(error = %e, "could not look for leftover scratch buckets"),
        }
    }
    scratch.create(db_name).await?;
    let mut first: Option<Error> = None;
    for (a, stored) in &plan.database {
        let recorded = recorded_tables(plan.record, a);
        tracing::info!(artifact = %a.file, scratch = %db_name, server = %scratch.server, "restore test: loading the dump");
        match db::load_and_compare(
            plan.cfg,
            plan.dir,
            scratch,
            db_name,
            (a, stored),
            recorded,
            &mut f.database,
        )
        .await
        {
            Ok(restored) => f.restored = restored,
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    if let Some((client, o)) = s3 {
        let sample = (!plan.full).then_some(plan.rt.sample);
        for ((a, stored), name) in plan.buckets.iter().zip(bucket_names) {
            let mut found = BucketTestResult {
                artifact: a.file.clone(),
                bucket: a.source.clone(),
                objects: 0,
                sampled: 0,
                mismatches: Vec::new(),
            };
            let endpoint = o.endpoint.clone().unwrap_or_default();
            tracing::info!(artifact = %a.file, scratch = %name, "restore test: uploading and reading back objects");
            let r = objects::test_archive(
                client,
                &endpoint,
                o.concurrency,
                plan.dir,
                (a, stored),
                name,
                sample,
                &mut found,
            )
            .await;
            f.buckets.push(found);
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Each table recorded or restored, recorded ones first, in the record's order.
fn table_lines(plan: &Plan<'_>, restored: &[TableCount]) -> Vec<TableLine> {
    let recorded: &[TableCount] = plan
        .database
        .first()
        .and_then(|(a, _)| recorded_tables(plan.record, a))
        .unwrap_or_default();
    let same = |a: &TableCount, b: &TableCount| a.schema == b.schema && a.name == b.name;
    let mut out: Vec<TableLine> = recorded
        .iter()
        .map(|r| TableLine {
            table: r.qualified(),
            recorded: Some(r.rows),
            exact: r.exact,
            restored: restored.iter().find(|t| same(t, r)).map(|t| t.rows),
        })
        .collect();
    out.extend(
        restored
            .iter()
            .filter(|t| !recorded.iter().any(|r| same(r, t)))
            .map(|t| TableLine {
                table: t.qualified(),
                recorded: None,
                exact: true,
                restored: Some(t.rows),
            }),
    );
    out
}

/// A restore test and what people hear of it: an alert when it failed (its own wording), and a
/// metrics push. The daemon and `verify --restore-test` both come through here; the daemon passes
/// its counters so that its push keeps the daemon-only metrics, as its runs' pushes do.
///
/// # Errors
/// As [`run`]: no test could start.
pub async fn job(
    cfg: &Config,
    sel: &Selector,
    opts: &RestoreTestOptions,
    stop: impl std::future::Future<Output = String>,
    daemon: Option<&DaemonCounters>,
) -> Result<(RestoreTestReport, NotifyReport)> {
    let report = run(cfg, sel, opts, stop).await?;
    let notify = match (cfg.notify(), report.recorded) {
        (Ok(n), true) => {
            crate::notify::after_restore_test(cfg, n, &report.run_id, &report.result, daemon).await
        }
        _ => NotifyReport::default(),
    };
    Ok((report, notify))
}
