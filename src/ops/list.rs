//! What is in a backup directory: runs (from their records, each with its change against the
//! previous run and its size anomalies), unmanaged files, leftovers; and the operator's summary
//! of it (`status`, with the open anomaly). Reads only.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::state::{RestoreTestState, State};
use crate::catalog::{
    Anomaly, ArtifactKind, Catalog, Entry, RestoreTestRecord, RunId, RunRecord, RunState,
};
use crate::config::AnomalyConfig;
use crate::error::Result;
use crate::sink::local::{BackupDir, RETIRED_PREFIX, TEMP_PREFIX};
use crate::units::human_bytes;

/// One run as `list` and `status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    /// `ok`, `partial`, `failed`, `running`, `incomplete` (killed before it finished) or
    /// `unreadable` (the record cannot be parsed or was modified).
    pub status: RunState,
    pub failed_step: Option<crate::catalog::Step>,
    pub error: Option<String>,
    pub artifacts: Vec<ArtifactSummary>,
    /// Stored bytes of this run's artifacts that are on disk.
    pub bytes: u64,
    /// The run's last restore test, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTestSummary>,
    /// Size and objects against the previous run with backups (ok or partial), by sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<RunChange>,
    /// Values beyond bounds against the recent good runs, when the run found any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<Anomaly>,
    /// True when `stackback anomaly ack` covers these anomalies.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub anomalies_acknowledged: bool,
}

/// A run's size and objects against the previous run with backups, in signed percent.
#[derive(Debug, Clone, Serialize)]
pub struct RunChange {
    pub previous_run_id: RunId,
    /// Stored bytes the records name (null when the previous run recorded none).
    pub bytes_percent: Option<f64>,
    /// Objects in bucket archives (null unless both runs backed buckets up).
    pub objects_percent: Option<f64>,
}

/// What a run recorded: stored bytes, and objects when it backed buckets up.
fn recorded_size(r: &RunRecord) -> (u64, Option<u64>) {
    let bytes = r.artifacts.iter().map(|a| a.stored_bytes).sum();
    let objects = r
        .artifacts
        .iter()
        .filter_map(|a| a.objects)
        .reduce(|a, b| a + b);
    (bytes, objects)
}

fn percent(before: u64, now: u64) -> Option<f64> {
    (before > 0).then(|| crate::anomaly::change_percent(before, now))
}

/// A run's last restore test, as `list` and `status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestSummary {
    pub ok: bool,
    /// When it finished.
    pub tested_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Tables and rows in the scratch database (null when the dump did not load).
    pub tables: Option<u64>,
    pub rows: Option<u64>,
    /// Tables whose counts differ, and objects that read back differently.
    pub mismatches: usize,
    pub objects_sampled: u64,
    pub error: Option<String>,
}

impl RestoreTestSummary {
    pub fn of(t: &RestoreTestRecord) -> RestoreTestSummary {
        let loaded = t.database.as_ref().filter(|d| d.tables > 0 || t.ok);
        RestoreTestSummary {
            ok: t.ok,
            tested_at: t.finished_at,
            duration_seconds: t.duration_ms as f64 / 1000.0,
            tables: loaded.map(|d| d.tables),
            rows: loaded.map(|d| d.rows),
            mismatches: t.database.as_ref().map_or(0, |d| d.mismatches.len())
                + t.buckets.iter().map(|b| b.mismatches.len()).sum::<usize>(),
            objects_sampled: t.buckets.iter().map(|b| b.sampled).sum(),
            error: t.error.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactSummary {
    pub kind: ArtifactKind,
    pub file: String,
    pub bytes: u64,
    pub verified: bool,
    /// False when the file named by the record is missing from disk.
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
}

/// A file in the backup directory that no run record names.
#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub file: String,
    pub bytes: u64,
    pub run_id: Option<RunId>,
    pub kind: Option<ArtifactKind>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub runs: usize,
    pub ok: usize,
    pub partial: usize,
    pub failed: usize,
    pub incomplete: usize,
    pub database_backups: usize,
    pub bucket_backups: usize,
    pub bytes_on_disk: u64,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Everything in a backup directory, newest run first. JSON schema: docs/list-json.md.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub schema: u32,
    pub backup_dir: String,
    pub runs: Vec<RunSummary>,
    pub unmanaged: Vec<FileSummary>,
    pub temp_files: Vec<FileSummary>,
    pub totals: Totals,
}

impl Listing {
    /// The newest run whose status is ok.
    pub fn last_success(&self) -> Option<&RunSummary> {
        self.runs.iter().find(|r| r.status == RunState::Ok)
    }
}

fn summarize(
    dir: &BackupDir,
    r: &RunRecord,
    locked: bool,
    mark: Option<&(u64, RunId)>,
) -> RunSummary {
    let status = if !r.checksum_ok() {
        RunState::Unreadable
    } else {
        match r.status {
            RunState::Running if !locked => RunState::Incomplete,
            s => s,
        }
    };
    let artifacts: Vec<ArtifactSummary> = r
        .artifacts
        .iter()
        .map(|a| {
            let meta = std::fs::metadata(dir.join(&a.file)).ok();
            ArtifactSummary {
                kind: a.kind,
                file: a.file.clone(),
                bytes: meta.as_ref().map_or(0, |m| m.len()),
                verified: a.verification.ok,
                present: meta.is_some(),
                objects: a.objects,
            }
        })
        .collect();
    RunSummary {
        run_id: r.run_id.clone(),
        started_at: r.started_at,
        finished_at: r.finished_at,
        duration_seconds: r
            .finished_at
            .map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0),
        status,
        failed_step: r.failed_step.clone(),
        error: r.error.clone(),
        bytes: artifacts.iter().map(|a| a.bytes).sum(),
        artifacts,
        restore_test: r.restore_test.as_ref().map(RestoreTestSummary::of),
        change: None,
        anomalies: r.anomalies.clone().unwrap_or_default(),
        anomalies_acknowledged: r.anomalies.as_ref().is_some_and(|a| !a.is_empty())
            && mark.is_some_and(|(s, id)| r.order() <= (*s, id)),
    }
}

/// Lists a backup directory.
pub fn list(dir: &BackupDir) -> Result<Listing> {
    let catalog = Catalog::new(dir.clone());
    let locked = dir.is_locked();
    // Listing goes on without the state file: only "acknowledged" marks would be missing.
    let mark = State::load(dir).ok().and_then(|s| s.anomaly_mark());
    let mut runs = Vec::new();
    let mut named = std::collections::HashSet::new();
    let mut previous: Option<(RunId, u64, Option<u64>)> = None;
    for e in catalog.entries()? {
        match e {
            Entry::Record(r) => {
                named.extend(r.files().map(String::from));
                named.insert(r.file_name());
                let mut summary = summarize(dir, &r, locked, mark.as_ref());
                if r.has_good_artifacts() && r.checksum_ok() {
                    let (bytes, objects) = recorded_size(&r);
                    if let Some((id, b, o)) = &previous {
                        summary.change = Some(RunChange {
                            previous_run_id: id.clone(),
                            bytes_percent: percent(*b, bytes),
                            objects_percent: o.zip(objects).and_then(|(o, n)| percent(o, n)),
                        });
                    }
                    previous = Some((r.run_id.clone(), bytes, objects));
                }
                runs.push(summary);
            }
            Entry::Unreadable {
                run_id,
                file,
                error,
            } => {
                named.insert(file.clone());
                runs.push(RunSummary {
                    started_at: run_id.time(),
                    run_id,
                    finished_at: None,
                    duration_seconds: None,
                    status: RunState::Unreadable,
                    failed_step: None,
                    error: Some(error),
                    artifacts: Vec::new(),
                    bytes: 0,
                    restore_test: None,
                    change: None,
                    anomalies: Vec::new(),
                    anomalies_acknowledged: false,
                });
            }
        }
    }
    runs.reverse();
    let recorded: std::collections::HashSet<RunId> =
        runs.iter().map(|r| r.run_id.clone()).collect();
    let (unmanaged, temp_files, bytes_on_disk) = other_files(dir, &named, &recorded)?;
    let (free_bytes, total_bytes) = dir.space()?;
    let count = |s: RunState| runs.iter().filter(|r| r.status == s).count();
    let good_with = |k: ArtifactKind| {
        runs.iter()
            .filter(|r| matches!(r.status, RunState::Ok | RunState::Partial))
            .flat_map(|r| &r.artifacts)
            .filter(|a| a.kind == k && a.verified && a.present)
            .count()
    };
    let totals = Totals {
        runs: runs.len(),
        ok: count(RunState::Ok),
        partial: count(RunState::Partial),
        failed: count(RunState::Failed),
        incomplete: count(RunState::Incomplete),
        database_backups: good_with(ArtifactKind::Database),
        bucket_backups: good_with(ArtifactKind::Objects) + good_with(ArtifactKind::Volume),
        bytes_on_disk,
        free_bytes,
        total_bytes,
    };
    Ok(Listing {
        schema: 1,
        backup_dir: dir.path().display().to_string(),
        runs,
        unmanaged,
        temp_files,
        totals,
    })
}

/// Files no record names that look like backups (unmanaged), temp and retired files and files a
/// killed run left behind under its id (leftovers), and the bytes of every file.
fn other_files(
    dir: &BackupDir,
    named: &std::collections::HashSet<String>,
    recorded: &std::collections::HashSet<RunId>,
) -> Result<(Vec<FileSummary>, Vec<FileSummary>, u64)> {
    let (mut unmanaged, mut temp_files, mut bytes_on_disk) = (Vec::new(), Vec::new(), 0);
    for name in dir.file_names()? {
        let bytes = std::fs::metadata(dir.join(&name)).map_or(0, |m| m.len());
        bytes_on_disk += bytes;
        let f = FileSummary {
            run_id: RunId::from_artifact_name(&name),
            kind: ArtifactKind::of_file_name(&name),
            file: name.clone(),
            bytes,
        };
        let left_by_a_run =
            !named.contains(&name) && f.run_id.as_ref().is_some_and(|id| recorded.contains(id));
        if name.starts_with(TEMP_PREFIX) || name.starts_with(RETIRED_PREFIX) || left_by_a_run {
            temp_files.push(f);
        } else if !named.contains(&name) && f.kind.is_some() {
            unmanaged.push(f);
        }
    }
    Ok((unmanaged, temp_files, bytes_on_disk))
}

/// What `stackback status` reports. JSON schema: docs/list-json.md.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub schema: u32,
    pub last_run: Option<RunSummary>,
    pub last_success: Option<RunSummary>,
    pub last_success_age_seconds: Option<i64>,
    /// Next scheduled run, when a schedule is configured.
    pub next_run: Option<DateTime<Utc>>,
    pub good_backups: usize,
    pub bytes_on_disk: u64,
    pub free_bytes: u64,
    pub warnings: Vec<String>,
    /// True when no good backup is younger than `max_age_seconds`.
    pub stale: bool,
    pub max_age_seconds: u64,
    /// The off-site copies as this host last saw them, once one was attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::catalog::remote_state::RemoteState>,
    /// The last restore test and the last that passed (from the state file, so pruning the
    /// tested run does not lose them); absent until a restore test ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTestState>,
    /// The open size anomaly: the newest good run's anomalies, nobody acknowledged them, and no
    /// run since is back within bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<crate::anomaly::Open>,
}

/// Summarises the backup directory for operators and health checks.
pub fn status(
    dir: &BackupDir,
    now: DateTime<Utc>,
    cfg: &crate::config::StatusConfig,
    anomaly_cfg: &AnomalyConfig,
    next_run: Option<DateTime<Utc>>,
) -> Result<Status> {
    let (max_age, free_warn) = (cfg.max_age, cfg.free_warn_bytes);
    let l = list(dir)?;
    let last_success = l.last_success().cloned();
    let age = last_success
        .as_ref()
        .map(|r| (now - r.finished_at.unwrap_or(r.started_at)).num_seconds());
    let stale = age.is_none_or(|a| a > max_age.as_secs() as i64);
    let mut warnings = Vec::new();
    if l.totals.free_bytes < free_warn {
        warnings.push(format!(
            "only {} free on the backup volume (warning below {})",
            human_bytes(l.totals.free_bytes),
            human_bytes(free_warn)
        ));
    }
    if stale {
        warnings.push(match &last_success {
            Some(r) => format!(
                "the last good backup ({}) is older than {} s",
                r.run_id,
                max_age.as_secs()
            ),
            None => "there is no good backup".into(),
        });
    }
    if let Some(r) = l.runs.first() {
        if r.status != RunState::Ok && r.status != RunState::Running {
            warnings.push(format!("the last run ({}) is {}", r.run_id, r.status));
        }
    }
    let state = State::load(dir).unwrap_or_else(|e| {
        warnings.push(format!("the state file is unreadable: {e}"));
        State::default()
    });
    let anomaly = crate::ops::anomaly::open_in(
        &Catalog::new(dir.clone()).records()?,
        state.anomaly_mark().as_ref(),
        anomaly_cfg,
    );
    if let Some(a) = &anomaly {
        warnings.push(format!(
            "size anomaly in run {}: {}. The backup is valid; {}if the change is expected: stackback anomaly ack {}",
            a.run_id,
            crate::anomaly::summary(&a.anomalies),
            a.keep
                .as_ref()
                .map(|k| format!("run {k}, from before it, is kept until it is resolved; "))
                .unwrap_or_default(),
            a.run_id
        ));
    }
    let restore_test = state.restore_test;
    if let Some(t) = restore_test.as_ref().filter(|t| !t.last_ok) {
        warnings.push(format!(
            "the last restore test (of run {}) failed: `stackback list` shows why",
            t.last_run_id
        ));
    }
    let tolerance = crate::retention::CLOCK_TOLERANCE;
    for r in l.runs.iter().filter(|r| r.started_at > now + tolerance) {
        warnings.push(format!(
            "run {} is dated in the future ({}): the clock was ahead when it ran; it is kept, and \
             `latest` and retention go by the order runs happened in, not by this date",
            r.run_id,
            r.started_at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    let remote = Some(crate::catalog::remote_state::RemoteState::load(dir))
        .filter(|r| r.last_attempt_at.is_some());
    if let Some(r) = remote.as_ref().filter(|r| r.last_ok == Some(false)) {
        warnings.push(format!(
            "the last off-site copy to {} failed: {}",
            r.remote,
            r.last_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(Status {
        schema: 1,
        remote,
        last_run: l.runs.first().cloned(),
        good_backups: l.totals.ok,
        bytes_on_disk: l.totals.bytes_on_disk,
        free_bytes: l.totals.free_bytes,
        last_success_age_seconds: age,
        last_success,
        next_run,
        warnings,
        stale,
        max_age_seconds: max_age.as_secs(),
        restore_test,
        anomaly,
    })
}
