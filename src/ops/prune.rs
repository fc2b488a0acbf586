//! Prune: carries out [`crate::retention::plan`] on a backup directory.
//!
//! A run is retired record first: `run_<id>.json` is renamed to `.stackback-retired.run_<id>.json`
//! (from that instant it no longer counts as a backup), the directory is fsynced, then its files are
//! deleted, then the retired record. A prune interrupted half-way leaves a retired record, which the
//! next prune finishes; it never leaves a run that looks complete but is not. Files no record names
//! (an old script's backups) are only deleted with `include_unmanaged`. Runs under the directory
//! lock: by a backup run after it verified (it already holds the lock), or by `stackback prune`.
//! The last good run before an open size anomaly is pinned: kept, with the reason, whatever the
//! policy says.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{ArtifactKind, Catalog, Entry, RunId, RunRecord, RunState};
use crate::config::{AnomalyConfig, RetentionConfig};
use crate::error::{Error, Result};
use crate::retention::{plan, Decision, RunInfo, CLOCK_TOLERANCE, MAX_SKEW};
use crate::sink::local::{BackupDir, RETIRED_PREFIX, TEMP_PREFIX};

#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    pub dry_run: bool,
    pub include_unmanaged: bool,
    /// The run calling prune: never touched.
    pub current: Option<RunId>,
}

/// What prune decided and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    /// Files deleted (or, in a dry run, that would be).
    pub deleted_files: Vec<String>,
    pub freed_bytes: u64,
    /// Files kept although they look like backups, and why.
    pub notes: Vec<String>,
}

impl PruneReport {
    pub fn deleted_runs(&self) -> Vec<RunId> {
        self.decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.run_id.clone())
            .collect()
    }
}

/// `stackback prune`: refused while this host's clock and the database server's disagree (when
/// the server answers), since retention decides on dates.
pub async fn run(cfg: &crate::config::Config, opts: &PruneOptions) -> Result<PruneReport> {
    let retention = cfg.retention()?.clone();
    let anomaly = *cfg.anomaly()?;
    let dir = BackupDir::open(&cfg.backup_dir())?;
    if let Some(skew) = server_skew(cfg).await.filter(|s| s.abs() > MAX_SKEW) {
        if !opts.dry_run {
            return Err(Error::step(
                "pruning",
                format!(
                    "refused: this host's clock is {} s away from the database server's, and retention decides on dates; set the clock right (NTP) first",
                    skew.num_seconds()
                ),
            ));
        }
    }
    let opts = opts.clone();
    crate::ops::blocking("pruning", move || {
        prune(&dir, &retention, &anomaly, Utc::now(), &opts)
    })
    .await
}

/// The database server's clock minus this host's, when the server answers within 5 s.
async fn server_skew(cfg: &crate::config::Config) -> Option<chrono::Duration> {
    let pg = cfg.postgres().ok()?;
    let probe = crate::source::postgres::probe(pg);
    let info = tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .ok()?
        .ok()?;
    Some(info.now - Utc::now())
}

/// Prunes under the directory lock; `prune` itself takes it.
pub fn prune(
    dir: &BackupDir,
    retention: &RetentionConfig,
    anomaly: &AnomalyConfig,
    now: DateTime<Utc>,
    opts: &PruneOptions,
) -> Result<PruneReport> {
    let _lock = dir.lock()?;
    prune_locked(dir, retention, anomaly, now, opts)
}

/// Prunes; the caller holds the directory lock. While a size anomaly is open, the last good run
/// before it is kept whatever the policy says (`anomaly`'s settings decide whether one can be).
pub fn prune_locked(
    dir: &BackupDir,
    retention: &RetentionConfig,
    anomaly: &AnomalyConfig,
    now: DateTime<Utc>,
    opts: &PruneOptions,
) -> Result<PruneReport> {
    let policy = &retention.policy;
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    finish_retired(dir, opts, &mut report)?;

    let catalog = Catalog::new(dir.clone());
    let (records, protected) = usable_records(&catalog, &mut report)?;
    let runs: Vec<RunInfo> = records
        .values()
        .map(|r| RunInfo {
            sequence: r.sequence.unwrap_or(0),
            id: r.run_id.clone(),
            // Prune holds the lock: a record still `running` belongs to a run that died.
            state: match r.status {
                RunState::Running => RunState::Incomplete,
                s => s,
            },
        })
        .collect();
    let mut in_order: Vec<RunRecord> = records.values().cloned().collect();
    in_order.sort_by(|a, b| a.order().cmp(&b.order()));
    let pins = crate::ops::anomaly::pins(dir, &in_order, anomaly);
    report.decisions = plan(&runs, policy, now, retention.timezone, &pins)
        .map_err(|e| Error::config("backup.retention_days", e))?;

    let names = dir.file_names()?;
    let mut named: HashSet<String> = HashSet::new();
    for r in records.values() {
        named.insert(r.file_name());
        named.extend(r.files().map(String::from));
    }
    // The calling run anchors the window and counts for the KEEP rules; it is never deleted.
    for d in report
        .decisions
        .iter_mut()
        .filter(|d| opts.current.as_ref() == Some(&d.run_id))
    {
        if !d.keep {
            d.keep = true;
            d.reasons = vec!["the run that is pruning".into()];
        }
    }
    for d in report.decisions.clone().iter().filter(|d| !d.keep) {
        let r = &records[&d.run_id];
        let mut files: Vec<String> = r.files().map(String::from).collect();
        if d.state == RunState::Incomplete {
            // A killed run's artifacts may be on disk under their final names but not in its record.
            files.extend(catalog.strays(&r.run_id, &named)?);
        }
        retire(dir, r, &files, opts, &mut report)?;
    }
    sweep_temp_files(dir, &names, policy.grace, opts, &mut report)?;
    // As the retention window: the newest good run by sequence that is not dated in the future.
    let newest_good = records
        .values()
        .filter(|r| r.status == RunState::Ok && r.run_id.time() <= now + CLOCK_TOLERANCE)
        .max_by(|a, b| a.order().cmp(&b.order()))
        .map(|r| r.run_id.time());
    let recorded: HashSet<RunId> = records.keys().cloned().collect();
    let unmanaged = Unmanaged {
        named: &named,
        recorded: &recorded,
        protected: &protected,
        newest_good,
        days: policy.days,
    };
    sweep_unmanaged(dir, &names, &unmanaged, opts, &mut report)?;
    if !opts.dry_run {
        dir.sync()?;
    }
    Ok(report)
}

/// The records prune may act on: readable and unmodified; and the ids of the others, which are
/// kept with a note, their files too (what they name cannot be known).
fn usable_records(
    catalog: &Catalog,
    report: &mut PruneReport,
) -> Result<(HashMap<RunId, RunRecord>, HashSet<RunId>)> {
    let mut records = HashMap::new();
    let mut protected = HashSet::new();
    for e in catalog.entries()? {
        match e {
            Entry::Unreadable {
                file,
                error,
                run_id,
            } => {
                report
                    .notes
                    .push(format!("{file} kept: the record is unreadable ({error})"));
                protected.insert(run_id);
            }
            Entry::Record(r) if !r.checksum_ok() => {
                report.notes.push(format!(
                    "run {} kept: its record was modified, so what it names is uncertain",
                    r.run_id
                ));
                protected.insert(r.run_id.clone());
            }
            Entry::Record(r) => {
                records.insert(r.run_id.clone(), *r);
            }
        }
    }
    Ok((records, protected))
}

/// Temp files of crashed runs, once older than the grace period.
fn sweep_temp_files(
    dir: &BackupDir,
    names: &[String],
    grace: chrono::Duration,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    for n in names.iter().filter(|n| n.starts_with(TEMP_PREFIX)) {
        let age = std::fs::metadata(dir.join(n))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a.as_secs() as i64 > grace.num_seconds()) {
            delete(dir, n, opts, report)?;
        }
    }
    Ok(())
}

/// What tells an unmanaged file from the files of runs.
struct Unmanaged<'a> {
    /// Files that readable records name.
    named: &'a HashSet<String>,
    /// Runs with a record: a file with their id that the record does not name is what a killed
    /// run left behind, and goes with its run, never as an old script's backup.
    recorded: &'a HashSet<RunId>,
    /// Runs whose records cannot be trusted: their files stay.
    protected: &'a HashSet<RunId>,
    newest_good: Option<DateTime<Utc>>,
    days: u32,
}

/// Files that look like backups but that no record names: kept unless `include_unmanaged`, and
/// then only deleted once outside the days window.
fn sweep_unmanaged(
    dir: &BackupDir,
    names: &[String],
    u: &Unmanaged<'_>,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let (newest_good, days) = (u.newest_good, u.days);
    for n in names {
        if u.named.contains(n) || n.starts_with('.') || ArtifactKind::of_file_name(n).is_none() {
            continue;
        }
        let Some(id) = RunId::from_artifact_name(n) else {
            continue;
        };
        if u.recorded.contains(&id) {
            report.notes.push(format!(
                "{n} kept: left behind by run {id}, whose record does not name it; it goes when that run is pruned"
            ));
            continue;
        }
        if u.protected.contains(&id) {
            report.notes.push(format!(
                "{n} kept: the record of run {id} cannot be read, so its files are left alone"
            ));
            continue;
        }
        let old =
            newest_good.is_some_and(|g| g - id.time() > chrono::Duration::days(i64::from(days)));
        if !opts.include_unmanaged {
            report.notes.push(format!("{n} kept: unmanaged (no run record names it; --include-unmanaged deletes old ones)"));
        } else if old {
            delete(dir, n, opts, report)?;
        } else {
            report
                .notes
                .push(format!("{n} kept: unmanaged, inside the {days}-day window"));
        }
    }
    Ok(())
}

fn delete(
    dir: &BackupDir,
    name: &str,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    report.freed_bytes += std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    report.deleted_files.push(name.to_string());
    if !opts.dry_run {
        dir.remove(name)?;
    }
    Ok(())
}

/// Record first (renamed, so it no longer counts), then the files, then the retired record.
fn retire(
    dir: &BackupDir,
    r: &RunRecord,
    files: &[String],
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let record = r.file_name();
    let retired = format!("{RETIRED_PREFIX}{record}");
    report.deleted_files.push(record.clone());
    if !opts.dry_run {
        std::fs::rename(dir.join(&record), dir.join(&retired))
            .map_err(|e| Error::io("cannot retire run record", dir.join(&record), e))?;
        dir.sync()?;
    }
    for f in files {
        delete(dir, f, opts, report)?;
    }
    if !opts.dry_run {
        dir.remove(&retired)?;
    }
    tracing::info!(run = %r.run_id, files = files.len(), dry_run = opts.dry_run, "pruned run");
    Ok(())
}

/// Completes retirements a previous prune could not finish.
fn finish_retired(dir: &BackupDir, opts: &PruneOptions, report: &mut PruneReport) -> Result<()> {
    for n in dir
        .file_names()?
        .into_iter()
        .filter(|n| n.starts_with(RETIRED_PREFIX))
    {
        let path = dir.join(&n);
        let files: Vec<String> = std::fs::read(&path)
            .ok()
            .and_then(|b| RunRecord::from_json(&b).ok())
            .map(|r| r.files().map(String::from).collect())
            .unwrap_or_default();
        for f in &files {
            delete(dir, f, opts, report)?;
        }
        delete(dir, &n, opts, report)?;
    }
    Ok(())
}
