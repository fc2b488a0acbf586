//! One backup run: lock, record start, pre-flight, database, globals, buckets, verify, record end.
//!
//! The run record is written when the run starts (state `running`) and rewritten at the end, after
//! every artifact was written and verified; a failed run removes the artifacts it wrote so nothing
//! it leaves could pass for a backup, except a verified database artifact when only a later step
//! failed (state `partial`). Steps report errors; this module decides what they mean for the run.
//! An `ok` run is compared with the recent good runs (size anomalies, [`crate::anomaly`]) before
//! it is recorded. Retention runs only after an `ok` run is recorded.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::catalog::{
    ArtifactKind, ArtifactRecord, Catalog, Encryption, LowSpace, PruneSummary, RunId, RunRecord,
    RunState, Step, Verification, VerifyLevel,
};
use crate::config::{Config, ObjectsConfig, PostgresConfig, StoreConfig, Thresholds};
use crate::crypt::{Identities, Recipients};
use crate::error::{Error, Result};
use crate::ops::verify::{check_followed, CheckError, Checked, Followed};
use crate::progress::Progress;
use crate::redact::Redactor;
use crate::retention::MAX_SKEW;
use crate::sink::local::{ArtifactWriter, BackupDir};
use crate::source::postgres::{self, select_tool, ToolSearch};
use crate::units::human_bytes;

mod checked;
mod counted;
mod finish;

use finish::{compare_with_recent_runs, in_stream_note, prune_after, record_failure};

/// What `stackback run` did.
#[derive(Debug)]
pub struct RunReport {
    pub record: RunRecord,
    /// Why the run failed or was partial; `None` when the state is ok.
    pub error: Option<Error>,
    /// The off-site copy after the run, when a remote is configured and the run left a backup.
    pub offsite: Option<crate::ops::offsite::OffsiteReport>,
}

impl RunReport {
    /// The exit code for the CLI: verification failures are told apart from other failures, and
    /// a good local backup whose off-site copy failed is 5.
    pub fn exit_code(&self) -> i32 {
        match (&self.error, self.offsite_error()) {
            (Some(e), _) => e.exit_code(),
            (None, Some(_)) => crate::error::exit::REMOTE,
            (None, None) => 0,
        }
    }

    /// Why the off-site copy failed, when it did.
    pub fn offsite_error(&self) -> Option<&Error> {
        self.offsite.as_ref().and_then(|o| o.error.as_ref())
    }
}

/// Extra free space wanted beyond the previous run's size before a warning is raised.
const FREE_MARGIN: u64 = 64 << 20;

/// Times a volume is archived before a directory that keeps changing fails the step.
const VOLUME_ATTEMPTS: u32 = 3;

/// What a check thread that ended without a result (it panicked) means for the run.
const CHECK_DIED: &str = "the thread checking the new file stopped without a result (it panicked), so the file is unverified and the run fails: run the backup again and report this";

/// Runs one backup of everything configured.
///
/// # Errors
/// Only when no run could be started (a setting the run needs is invalid, the directory cannot be
/// created, another run holds the lock, the run record cannot be written). Everything later is
/// reported in [`RunReport`] and its record.
pub async fn run(cfg: &Config) -> Result<RunReport> {
    run_until(cfg, std::future::pending(), &Progress::default()).await
}

/// Like [`run`], but aborts the run cleanly when `stop` completes first (a timeout, a shutdown):
/// children are killed, temp files removed, and the record says failed with `stop`'s reason.
/// Progress is counted into `progress` for a front end to display.
pub async fn run_until(
    cfg: &Config,
    stop: impl std::future::Future<Output = String>,
    progress: &Progress,
) -> Result<RunReport> {
    let objects = cfg.objects()?;
    objects.check_for_backup()?;
    let sections = Sections {
        postgres: cfg.postgres()?,
        store: *cfg.store()?,
        thresholds: *cfg.thresholds()?,
        objects,
        recipients: cfg.encryption()?.recipients.clone(),
        // With the identity on this host, sealed artifacts are verified in full right away.
        identities: cfg.identities()?,
    };
    // Refused now, not after a backup: an empty policy is a configuration error.
    let retention = cfg.retention()?;
    let remote = cfg.remote()?;
    let anomaly = *cfg.anomaly()?;
    let dir = BackupDir::create(&cfg.backup_dir())?;
    let _lock = dir.lock()?;
    let catalog = Catalog::new(dir.clone());
    let (run_id, started_at) = unique_run_id(&dir).await?;
    let mut rec = RunRecord::new(run_id.clone(), started_at);
    let mut sequence = catalog.next_sequence()?;
    if let Some(r) = remote {
        // A rebuilt host that writes to the same remote continues the history it left there.
        if let Some(next) = crate::ops::offsite::remote_next_sequence(r, &dir).await {
            sequence = sequence.max(next);
        }
    }
    rec.sequence = Some(sequence);
    catalog.write(&rec)?;
    info!(run = %run_id, dir = %dir.path().display(), "backup run started");

    let redactor = cfg.redactor();
    let mut ctx = RunCtx {
        cfg: &sections,
        dir: &dir,
        redactor: &redactor,
        rec: &mut rec,
        step: Step::Preflight,
        progress,
        skew: None,
    };
    // Pinned so that the off-site copy after the run answers to the same deadline and signals.
    let mut stop = std::pin::pin!(stop);
    let result = tokio::select! {
        r = ctx.steps() => r,
        reason = &mut stop => Err(Error::step("backup run", reason)),
    };
    let step = std::mem::replace(&mut ctx.step, Step::Preflight);
    let skew = ctx.skew;
    let error = match result {
        Ok(()) => {
            rec.status = RunState::Ok;
            if let Some(rules) = &anomaly.rules {
                compare_with_recent_runs(&dir, &mut rec, rules);
            }
            None
        }
        Err(e) => {
            record_failure(&catalog, &mut rec, step, &e, &redactor)?;
            Some(e)
        }
    };
    rec.finished_at = Some(Utc::now());
    catalog.write(&rec)?;
    dir.sync()?;
    if let Err(e) = crate::notify::metrics::RunCounters::bump(&dir, rec.status) {
        warn!(error = %e, "cannot update the run counters");
    }
    if rec.status == RunState::Ok {
        // Only now, with a fresh backup verified and recorded, may old ones go; and only when this
        // host's clock agrees with the database server's, since retention reads dates.
        rec.prune = Some(match skew.filter(|s| s.abs() > MAX_SKEW) {
            Some(s) => {
                let why = format!(
                    "skipped: this host's clock is {} {} the database server's, so the dates of this run cannot be trusted to decide what to delete; set the clock right (NTP)",
                    crate::units::human_age_seconds(s.num_seconds().abs()),
                    if s > chrono::Duration::zero() { "behind" } else { "ahead of" }
                );
                warn!("{why}");
                PruneSummary {
                    deleted_runs: Vec::new(),
                    freed_bytes: 0,
                    error: Some(why),
                }
            }
            None => prune_after(&dir, retention, &anomaly, &run_id, &redactor),
        });
        catalog.write(&rec)?;
    }
    info!(run = %run_id, status = %rec.status, "backup run finished");
    let offsite = match remote {
        Some(r) if matches!(rec.status, RunState::Ok | RunState::Partial) => {
            // Remote retention reads dates too: only after a local prune that trusted the clock.
            let trusted =
                rec.status == RunState::Ok && rec.prune.as_ref().is_some_and(|p| p.error.is_none());
            Some(crate::ops::offsite::copy_after_run(r, &dir, &rec, trusted, &mut stop).await)
        }
        _ => None,
    };
    Ok(RunReport {
        record: rec,
        error,
        offsite,
    })
}

/// The run's start time, as an id no file in the directory uses yet.
async fn unique_run_id(dir: &BackupDir) -> Result<(RunId, DateTime<Utc>)> {
    loop {
        let now = Utc::now();
        let id = RunId::from_time(now);
        let taken = dir.file_names()?.iter().any(|n| n.contains(id.as_str()));
        if !taken {
            return Ok((id, now));
        }
        // Two runs in the same second: wait for the next one rather than share an id.
        let ms = 1000 - now.timestamp_subsec_millis().min(999) as u64;
        tokio::time::sleep(std::time::Duration::from_millis(ms + 5)).await;
    }
}

/// The sections of the configuration a run uses.
struct Sections<'a> {
    postgres: &'a PostgresConfig,
    store: StoreConfig,
    thresholds: Thresholds,
    objects: &'a ObjectsConfig,
    recipients: Option<Arc<Recipients>>,
    identities: Option<Arc<Identities>>,
}

struct RunCtx<'a> {
    cfg: &'a Sections<'a>,
    dir: &'a BackupDir,
    redactor: &'a Redactor,
    rec: &'a mut RunRecord,
    step: Step,
    progress: &'a Progress,
    /// The database server's clock minus this host's, from the probe.
    skew: Option<chrono::Duration>,
}

impl RunCtx<'_> {
    async fn steps(&mut self) -> Result<()> {
        self.step = Step::Preflight;
        self.preflight()?;
        self.step = Step::Database;
        self.database().await?;
        if self.cfg.postgres.globals {
            self.step = Step::Globals;
            self.globals().await?;
        }
        let objects = self.cfg.objects;
        if let Some(data_dir) = &objects.data_dir {
            self.step = Step::Volume;
            self.volume(data_dir.clone()).await?;
        } else if objects.s3_enabled() {
            let client = crate::s3::client(objects, None)?;
            for bucket in &objects.buckets {
                self.step = Step::Objects(bucket.clone());
                self.bucket(&client, bucket).await?;
            }
        }
        Ok(())
    }

    /// Free space: a hard floor (BACKUP_MIN_FREE_BYTES) and a warning below the last run's size.
    fn preflight(&mut self) -> Result<()> {
        let (free, _total) = self.dir.space()?;
        let min = self.cfg.store.min_free_bytes;
        if min > 0 && free < min {
            return Err(Error::step(
                "pre-flight check",
                format!(
                    "only {} free on the volume of {}, below BACKUP_MIN_FREE_BYTES ({}): free space or lower the retention",
                    human_bytes(free),
                    self.dir.path().display(),
                    human_bytes(min)
                ),
            ));
        }
        let catalog = Catalog::new(self.dir.clone());
        let previous: u64 = catalog
            .records()?
            .iter()
            .rev()
            .find(|r| r.has_good_artifacts())
            .map(|r| r.artifacts.iter().map(|a| a.stored_bytes).sum())
            .unwrap_or(0);
        if previous > 0 && free < previous + FREE_MARGIN {
            let msg = format!(
                "low free space: only {} free in {}; the last backup took {}",
                human_bytes(free),
                self.dir.path().display(),
                human_bytes(previous)
            );
            warn!("{msg}");
            self.rec.warnings.push(msg);
            self.rec.low_space = Some(LowSpace {
                free_bytes: free,
                previous_bytes: previous,
            });
        }
        Ok(())
    }

    async fn database(&mut self) -> Result<()> {
        let pg = self.cfg.postgres;
        let search = ToolSearch::system(pg.pg_dump.clone());
        // Both before the dump can start, neither needs the other: side by side.
        let (tools, probe) = tokio::join!(search.tools("pg_dump"), postgres::probe(pg));
        let tools = tools?;
        let server = match &probe {
            Ok(v) => {
                self.skew = Some(v.now - Utc::now());
                Some(v.clone())
            }
            Err(e) => {
                // pg_dump will meet the same problem and say it in its own words.
                warn!(error = %self.redactor.redact(&e.to_string()), "could not ask the server its version");
                None
            }
        };
        let tool = select_tool("pg_dump", &tools, server.as_ref().map(|s| s.major))?.clone();
        self.rec.pg_dump_version = Some(tool.version.clone());
        self.progress
            .start_step("database", server.as_ref().map(|s| s.db_bytes));
        self.rec.server_version = server.map(|s| s.version);
        info!(pg_dump = %tool.path.display(), version = %tool.version, db = %pg.db, "dumping database");
        let dumped = self.dump_in_snapshot(&tool, probe.is_ok()).await;
        match dumped {
            Err(Error::Child {
                tool,
                status,
                stderr,
                cause: None,
            }) => {
                // The probe's typed cause explains the failure; else ask the server now.
                let cause = match probe {
                    Err(Error::Postgres { cause, .. }) => cause,
                    _ => postgres::diagnose(pg).await,
                };
                Err(Error::Child {
                    tool,
                    status,
                    stderr,
                    cause,
                })
            }
            other => other,
        }
    }

    /// Streams a dump command's output into a new artifact, then verifies it.
    async fn dump_sql(
        &mut self,
        kind: ArtifactKind,
        tool: &str,
        cmd: tokio::process::Command,
    ) -> Result<()> {
        let db = self.cfg.postgres.db.clone();
        let name = self.artifact_name(kind, &db);
        let started = Utc::now();
        let t0 = Instant::now();
        let (mut w, check) = self.followed_writer(&name, kind)?;
        let temp = w.temp_path().to_path_buf();
        let outcome = crate::source::child::stream_stdout(
            cmd,
            tool,
            w.sink(),
            &temp,
            self.redactor,
            self.progress,
        )
        .await?;
        if !outcome.stderr.is_empty() {
            self.rec
                .warnings
                .push(format!("{tool}: {}", outcome.stderr));
        }
        // Checked in the stream, before the seal: a sealed file can only be read back with the
        // identity, which the backup host should not have.
        let marker = if kind == ArtifactKind::Database {
            postgres::DUMP_COMPLETE
        } else {
            postgres::DUMPALL_COMPLETE
        };
        if !postgres::tail_is_complete(w.plain_tail(), marker) {
            return Err(Error::verification(
                &name,
                crate::error::Problem::IncompleteDump { marker },
            ));
        }
        let digest = w.commit()?;
        let followed = check
            .await
            .map_err(|_| Error::step("verification", CHECK_DIED))?;
        let art = self.new_artifact(kind, name, db, started, t0, digest);
        self.judge_and_add(art, followed).await
    }

    fn writer(&self, name: &str) -> Result<ArtifactWriter> {
        ArtifactWriter::new(
            self.dir,
            name,
            self.cfg.store.compression,
            self.cfg.store.compression_level,
            self.cfg.recipients.as_deref(),
        )
    }

    async fn globals(&mut self) -> Result<()> {
        let pg = self.cfg.postgres;
        let search = ToolSearch::system(pg.pg_dump.clone());
        let tools = search.tools("pg_dumpall").await?;
        let server_major = self
            .rec
            .server_version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok());
        let tool = select_tool("pg_dumpall", &tools, server_major)?.clone();
        self.progress.start_step("globals", None);
        let cmd = postgres::globals_command(&tool, pg);
        self.dump_sql(ArtifactKind::Globals, "pg_dumpall", cmd)
            .await
    }

    fn artifact_name(&self, kind: ArtifactKind, source: &str) -> String {
        kind.file_name(
            source,
            &self.rec.run_id,
            self.cfg.store.compression,
            self.cfg.recipients.is_some(),
        )
    }

    async fn bucket(&mut self, client: &aws_sdk_s3::Client, bucket: &str) -> Result<()> {
        let objects = self.cfg.objects;
        crate::s3::check_bucket(client, bucket).await?;
        let name = self.artifact_name(ArtifactKind::Objects, bucket);
        let index_name = crate::catalog::index_file_name(&name);
        info!(
            bucket,
            prefix = objects.prefix.as_deref().unwrap_or(""),
            "backing up bucket"
        );
        let started = Utc::now();
        let t0 = Instant::now();
        let (archive, check) = self.followed_writer(&name, ArtifactKind::Objects)?;
        let out = crate::source::bucket::Outputs {
            archive,
            index: self.dir.create_temp(&index_name)?,
            recipients: self.cfg.recipients.clone(),
        };
        self.progress.start_step(&format!("bucket {bucket}"), None);
        let (summary, w, index) = crate::source::bucket::backup_bucket(
            client,
            bucket,
            objects.prefix.as_deref(),
            objects.concurrency,
            out,
            self.progress,
        )
        .await?;
        let digest = w.commit()?;
        index.commit()?;
        let followed = check
            .await
            .map_err(|_| Error::step("verification", CHECK_DIED))?;
        let sealed = self.cfg.recipients.is_some();
        if sealed && !summary.skipped.is_empty() {
            // An encrypted backup's record names nothing from inside the bucket: the keys are in
            // the log (above, as each was skipped), not in the record.
            self.rec.warnings.push(format!(
                "bucket {bucket}: {} objects were deleted between listing and fetching: skipped (keys in the log, not in the record of an encrypted backup)",
                summary.skipped.len()
            ));
        }
        for key in summary.skipped.iter().filter(|_| !sealed) {
            self.rec.warnings.push(format!(
                "bucket {bucket}: object {key:?} was deleted between listing and fetching: skipped"
            ));
        }
        info!(
            bucket,
            objects = summary.objects,
            bytes = summary.bytes,
            "bucket archived"
        );
        let mut art = self.new_artifact(
            ArtifactKind::Objects,
            name,
            bucket.to_string(),
            started,
            t0,
            digest,
        );
        art.objects = Some(summary.objects);
        art.index_file = Some(index_name);
        art.index_sha256 = Some(summary.index_sha256);
        art.index_stored_sha256 = summary.index_stored_sha256;
        if !sealed {
            art.skipped = summary.skipped;
        }
        self.judge_and_add(art, followed).await
    }

    async fn volume(&mut self, data_dir: std::path::PathBuf) -> Result<()> {
        let source = self
            .cfg
            .objects
            .buckets
            .first()
            .cloned()
            .or_else(|| {
                data_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "data".into());
        let name = self.artifact_name(ArtifactKind::Volume, &source);
        info!(dir = %data_dir.display(), "archiving data directory (volume mode)");
        let started = Utc::now();
        let t0 = Instant::now();
        let mut attempt = 1;
        let w = loop {
            let mut w = self.writer(&name)?;
            let dir = data_dir.clone();
            let archived = crate::ops::blocking("archiving the data directory", move || {
                crate::source::dir::tar_directory(&dir, &mut w).map(|_| w)
            })
            .await;
            match archived {
                // A file changed under us: the archive is dropped, and made again from scratch.
                Err(Error::SourceChanged { path, detail }) if attempt < VOLUME_ATTEMPTS => {
                    warn!(file = %path.display(), detail = %detail, attempt, "a file changed while it was archived: archiving again");
                    attempt += 1;
                }
                other => break other?,
            }
        };
        let digest = w.commit()?;
        let art = self.new_artifact(ArtifactKind::Volume, name, source, started, t0, digest);
        self.verify_and_add(art).await
    }

    fn new_artifact(
        &self,
        kind: ArtifactKind,
        file: String,
        source: String,
        started: DateTime<Utc>,
        t0: Instant,
        digest: crate::pipeline::Digest,
    ) -> ArtifactRecord {
        ArtifactRecord {
            kind,
            file,
            source,
            compression: self.cfg.store.compression,
            stored_bytes: digest.stored_bytes,
            // Set by the check for a file read back as it was written (`judge_and_add`).
            stored_sha256: digest.stored_sha256.unwrap_or_default(),
            stored_blake3: Some(digest.stored_blake3),
            plain_bytes: digest.plain_bytes,
            plain_blake3: Some(digest.plain_blake3),
            plain_sha256: None,
            started_at: started,
            duration_ms: t0.elapsed().as_millis() as u64,
            objects: None,
            index_file: None,
            index_sha256: None,
            index_stored_sha256: None,
            encryption: self.cfg.recipients.as_ref().map(|_| Encryption::Age),
            skipped: Vec::new(),
            verification: Verification {
                ok: false,
                checked_at: Utc::now(),
                detail: "not verified yet".into(),
                level: VerifyLevel::Full,
            },
        }
    }
}
