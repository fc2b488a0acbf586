//! One backup run: lock, record start, pre-flight, database, globals, buckets, verify, record end.
//!
//! The run record is written when the run starts (status `running`) and rewritten at the end, after
//! every artifact was written and verified; a failed run removes the artifacts it wrote so nothing
//! it leaves could pass for a backup, except a verified database artifact when only a later step
//! failed (status `partial`). Steps report errors; this module decides what they mean for the run.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::catalog::{
    ArtifactKind, ArtifactRecord, Catalog, RunId, RunRecord, RunStatus, Verification,
};
use crate::config::{Config, Redactor};
use crate::error::{Error, Result};
use crate::ops::verify::{check_artifact, human_bytes, Thresholds};
use crate::ops::ArtifactWriter;
use crate::sink::local::BackupDir;
use crate::source::postgres::{self, select_tool, ToolSearch};

/// What `stackback run` did.
#[derive(Debug)]
pub struct RunReport {
    pub record: RunRecord,
    /// Why the run failed or was partial; `None` when the status is ok.
    pub error: Option<Error>,
}

impl RunReport {
    /// The exit code for the CLI: verification failures are told apart from other failures.
    pub fn exit_code(&self) -> i32 {
        self.error.as_ref().map_or(0, Error::exit_code)
    }
}

/// Extra free space wanted beyond the previous run's size before a warning is raised.
const FREE_MARGIN: u64 = 64 << 20;

/// Runs one backup of everything configured.
///
/// # Errors
/// Only when no run could be started (directory cannot be created, locked by another run, run
/// record cannot be written). Everything later is reported in [`RunReport`] and its record.
pub async fn run(cfg: &Config) -> Result<RunReport> {
    let dir = BackupDir::create(&cfg.backup.dir)?;
    let _lock = dir.lock()?;
    let catalog = Catalog::new(dir.clone());
    let (run_id, started_at) = unique_run_id(&dir).await?;
    let mut rec = RunRecord::new(run_id.clone(), started_at);
    catalog.write(&rec)?;
    info!(run = %run_id, dir = %dir.path().display(), "backup run started");

    let redactor = cfg.redactor();
    let mut ctx = RunCtx {
        cfg,
        dir: &dir,
        redactor: &redactor,
        rec: &mut rec,
        step: "preflight",
    };
    let result = ctx.steps().await;
    let step = ctx.step;

    let error = match result {
        Ok(()) => {
            rec.status = RunStatus::Ok;
            None
        }
        Err(e) => {
            let db_ok = rec
                .artifacts
                .iter()
                .any(|a| a.kind == ArtifactKind::Database && a.verification.ok);
            rec.status = if db_ok && step != "database" && step != "preflight" {
                RunStatus::Partial
            } else {
                RunStatus::Failed
            };
            if rec.status == RunStatus::Failed {
                for a in &rec.artifacts {
                    dir.remove(&a.file)?;
                }
                rec.artifacts.clear();
            }
            let mut text = redactor.redact(&e.to_string());
            if let Some(h) = e.hint() {
                text.push_str(&format!(" (hint: {h})"));
            }
            rec.failed_step = Some(step.to_string());
            rec.error = Some(text);
            warn!(run = %run_id, step, error = %redactor.redact(&e.to_string()), "backup run failed");
            Some(e)
        }
    };
    rec.finished_at = Some(Utc::now());
    catalog.write(&rec)?;
    dir.sync()?;
    info!(run = %run_id, status = %rec.status, "backup run finished");
    Ok(RunReport { record: rec, error })
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

struct RunCtx<'a> {
    cfg: &'a Config,
    dir: &'a BackupDir,
    redactor: &'a Redactor,
    rec: &'a mut RunRecord,
    step: &'static str,
}

impl RunCtx<'_> {
    async fn steps(&mut self) -> Result<()> {
        self.step = "preflight";
        self.preflight()?;
        self.step = "database";
        self.database().await?;
        if self.cfg.postgres.globals {
            self.step = "globals";
            self.globals().await?;
        }
        Ok(())
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            min_db_bytes: self.cfg.backup.min_db_bytes,
            min_objects_bytes: self.cfg.backup.min_objects_bytes,
        }
    }

    /// Free space: a hard floor (BACKUP_MIN_FREE_BYTES) and a warning below the last run's size.
    fn preflight(&mut self) -> Result<()> {
        let (free, _total) = self.dir.space()?;
        let min = self.cfg.backup.min_free_bytes;
        if min > 0 && free < min {
            return Err(Error::Step {
                what: "pre-flight check".into(),
                detail: format!(
                    "only {} free on the volume of {}, below BACKUP_MIN_FREE_BYTES ({}): free space or lower the retention",
                    human_bytes(free),
                    self.dir.path().display(),
                    human_bytes(min)
                ),
            });
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
                "only {} free in {}; the last backup took {}",
                human_bytes(free),
                self.dir.path().display(),
                human_bytes(previous)
            );
            warn!("{msg}");
            self.rec.warnings.push(msg);
        }
        Ok(())
    }

    async fn database(&mut self) -> Result<()> {
        let pg = &self.cfg.postgres;
        let search = ToolSearch::system(pg.pg_dump.clone());
        let tools = search.tools("pg_dump").await?;
        let server = match postgres::server_version(pg).await {
            Ok(v) => Some(v),
            Err(e) => {
                // pg_dump will meet the same problem and say it in its own words.
                warn!(error = %self.redactor.redact(&e.to_string()), "could not ask the server its version");
                None
            }
        };
        let tool = select_tool("pg_dump", &tools, server.as_ref().map(|s| s.0))?.clone();
        self.rec.pg_dump_version = Some(tool.version.clone());
        self.rec.server_version = server.map(|s| s.1);
        info!(pg_dump = %tool.path.display(), version = %tool.version, db = %pg.db, "dumping database");

        let name = format!(
            "db_{}_{}.sql{}",
            pg.db,
            self.rec.run_id,
            self.cfg.backup.compression.extension()
        );
        let started = Utc::now();
        let t0 = Instant::now();
        let mut w = ArtifactWriter::new(
            self.dir,
            &name,
            self.cfg.backup.compression,
            self.cfg.backup.compression_level,
        )?;
        let temp = w.temp_path().to_path_buf();
        let outcome = postgres::dump_database(&tool, pg, w.sink(), &temp, self.redactor).await?;
        if !outcome.stderr.is_empty() {
            self.rec
                .warnings
                .push(format!("pg_dump: {}", outcome.stderr));
        }
        let digest = w.commit()?;
        self.record_and_verify(
            ArtifactKind::Database,
            name,
            pg.db.clone(),
            started,
            t0,
            digest,
        )
        .await
    }

    async fn globals(&mut self) -> Result<()> {
        let pg = &self.cfg.postgres;
        let search = ToolSearch::system(pg.pg_dump.clone());
        let tools = search.tools("pg_dumpall").await?;
        let server_major = self
            .rec
            .server_version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok());
        let tool = select_tool("pg_dumpall", &tools, server_major)?.clone();
        let name = format!(
            "globals_{}_{}.sql{}",
            pg.db,
            self.rec.run_id,
            self.cfg.backup.compression.extension()
        );
        let started = Utc::now();
        let t0 = Instant::now();
        let mut w = ArtifactWriter::new(
            self.dir,
            &name,
            self.cfg.backup.compression,
            self.cfg.backup.compression_level,
        )?;
        let temp = w.temp_path().to_path_buf();
        postgres::dump_globals(&tool, pg, w.sink(), &temp, self.redactor).await?;
        let digest = w.commit()?;
        self.record_and_verify(
            ArtifactKind::Globals,
            name,
            pg.db.clone(),
            started,
            t0,
            digest,
        )
        .await
    }

    /// Adds the artifact to the record and verifies it from disk; a failed check removes the file.
    async fn record_and_verify(
        &mut self,
        kind: ArtifactKind,
        file: String,
        source: String,
        started: DateTime<Utc>,
        t0: Instant,
        digest: crate::pipeline::Digest,
    ) -> Result<()> {
        let mut art = ArtifactRecord {
            kind,
            file,
            source,
            compression: self.cfg.backup.compression,
            stored_bytes: digest.stored_bytes,
            stored_sha256: digest.stored_sha256,
            plain_bytes: digest.plain_bytes,
            plain_sha256: digest.plain_sha256,
            started_at: started,
            duration_ms: t0.elapsed().as_millis() as u64,
            objects: None,
            skipped: Vec::new(),
            verification: Verification {
                ok: false,
                checked_at: Utc::now(),
                detail: "not verified yet".into(),
            },
        };
        let dir = self.dir.path().to_path_buf();
        let th = self.thresholds();
        let to_check = art.clone();
        let v = tokio::task::spawn_blocking(move || check_artifact(&dir, &to_check, &th))
            .await
            .map_err(|e| Error::Step {
                what: "verification".into(),
                detail: e.to_string(),
            })?;
        info!(file = %art.file, ok = v.ok, detail = %v.detail, "verified");
        art.verification = v.clone();
        if !v.ok {
            self.dir.remove(&art.file)?;
            return Err(Error::Verification(format!("{}: {}", art.file, v.detail)));
        }
        self.rec.artifacts.push(art);
        Ok(())
    }
}
