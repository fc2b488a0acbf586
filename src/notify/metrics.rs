//! Prometheus metrics, rendered from the run records (the source of truth) in the text exposition
//! format that the Pushgateway and `/metrics` scrapers parse.
//!
//! Everything is recomputed from the backup directory at each render, so a push after a failed
//! run still carries the last success time, and `/metrics` agrees with `stackback list`. The run
//! counters live in `.stackback-counters.json`, bumped under the directory lock at the end of each
//! run: they only ever grow, even when prune deletes old records. The text is written by hand: a
//! dozen gauges derived from files need no metrics registry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::catalog::state::State;
use crate::catalog::{ArtifactKind, Catalog, RunRecord, RunState};
use crate::config::{Config, PushTarget};
use crate::error::{Error, Result};
use crate::sink::local::BackupDir;

const COUNTERS: &str = ".stackback-counters.json";

/// Counters only the daemon knows.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    /// Scheduled runs skipped because the previous one was still going (or held the lock).
    pub skipped: AtomicU64,
}

/// Runs by result, since the backup directory was created.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunCounters {
    pub ok: u64,
    pub partial: u64,
    pub failed: u64,
}

impl RunCounters {
    pub fn load(dir: &BackupDir) -> RunCounters {
        std::fs::read(dir.join(COUNTERS))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Counts a finished run (the caller holds the directory lock).
    pub fn bump(dir: &BackupDir, status: RunState) -> Result<()> {
        let mut c = RunCounters::load(dir);
        match status {
            RunState::Ok => c.ok += 1,
            RunState::Partial => c.partial += 1,
            _ => c.failed += 1,
        }
        dir.write_atomic(
            COUNTERS,
            &serde_json::to_vec(&c).expect("counters serialise"),
        )
    }
}

fn kind_label(k: ArtifactKind) -> &'static str {
    match k {
        ArtifactKind::Database | ArtifactKind::Globals => "database",
        ArtifactKind::Objects | ArtifactKind::Volume => "objects",
    }
}

fn has(r: &RunRecord, label: &str) -> bool {
    r.artifacts
        .iter()
        .any(|a| kind_label(a.kind) == label && a.verification.ok)
}

/// Prometheus text exposition being written: one `# HELP`/`# TYPE` block per metric.
#[derive(Default)]
struct Exposition(String);

type Samples = Vec<(String, f64)>;

impl Exposition {
    /// Writes a metric; one without samples is left out.
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: Samples) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }
}

fn ts(d: chrono::DateTime<chrono::Utc>) -> f64 {
    d.timestamp_millis() as f64 / 1000.0
}

fn type_label(ty: &str) -> String {
    format!("{{type=\"{ty}\"}}")
}

/// The records a render looks at.
struct View<'a> {
    records: &'a [RunRecord],
    /// Runs that ended, oldest first.
    finished: Vec<&'a RunRecord>,
    /// The backup types this setup makes: `database`, and `objects` when buckets are configured
    /// or were backed up.
    types: Vec<&'static str>,
}

impl View<'_> {
    fn last(&self) -> Option<&RunRecord> {
        self.finished.last().copied()
    }

    /// Per type: the last run's result, and when the newest good backup finished.
    fn success(&self, e: &mut Exposition) {
        let per_type = |f: &dyn Fn(&str) -> Option<f64>| -> Samples {
            self.types
                .iter()
                .filter_map(|ty| f(ty).map(|v| (type_label(ty), v)))
                .collect()
        };
        if let Some(r) = self.last() {
            e.metric(
                "backup_success",
                "gauge",
                "1 if the last run backed this type up and verified it, else 0.",
                per_type(&|ty| Some(f64::from(has(r, ty) && r.status != RunState::Failed))),
            );
        }
        let last_success = per_type(&|ty| {
            self.finished
                .iter()
                .rev()
                .find(|r| r.has_good_artifacts() && has(r, ty))
                .map(|r| ts(r.finished_at.unwrap_or(r.started_at)))
        });
        e.metric(
            "backup_last_success_timestamp_seconds",
            "gauge",
            "When the newest verified backup of this type finished (Unix time).",
            last_success.clone(),
        );
        // The seed's name for the same, which its own alert rule reads.
        e.metric(
            "backup_last_success_timestamp",
            "gauge",
            "When the newest verified backup of this type finished (Unix time; the seed's name).",
            last_success,
        );
    }

    /// When the last run ended, how long it took, what it wrote.
    fn last_run(&self, e: &mut Exposition) {
        let Some(r) = self.last() else { return };
        let one = |v: f64| vec![(String::new(), v)];
        e.metric(
            "backup_last_run_timestamp_seconds",
            "gauge",
            "When the last run finished, whatever its result (Unix time).",
            one(ts(r.finished_at.unwrap_or(r.started_at))),
        );
        e.metric(
            "backup_duration_seconds",
            "gauge",
            "How long the last run took.",
            one(r.finished_at.map_or(0.0, |f| {
                (f - r.started_at).num_milliseconds() as f64 / 1000.0
            })),
        );
        let size = |ty: &str| -> f64 {
            r.artifacts
                .iter()
                .filter(|a| kind_label(a.kind) == ty)
                .map(|a| a.stored_bytes)
                .sum::<u64>() as f64
        };
        e.metric(
            "backup_size_bytes",
            "gauge",
            "Stored size of the last run's artifacts of this type.",
            self.types
                .iter()
                .map(|ty| (type_label(ty), size(ty)))
                .collect(),
        );
        if self.types.contains(&"objects") {
            let objects: u64 = r.artifacts.iter().filter_map(|a| a.objects).sum();
            e.metric(
                "backup_objects_total",
                "gauge",
                "Objects in the last run's bucket backups.",
                one(objects as f64),
            );
        }
    }
}

/// The metrics text for the backup directory of `cfg`.
/// `daemon` is `None` outside the daemon: a manual run's push then leaves the daemon-only counter
/// out instead of resetting it.
pub fn render(cfg: &Config, daemon: Option<&DaemonCounters>) -> Result<String> {
    let (records, counters, state) = match BackupDir::open(&cfg.backup_dir()) {
        Ok(d) => (
            Catalog::new(d.clone()).records()?,
            RunCounters::load(&d),
            State::load(&d).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the state file: restore-test metrics left out");
                State::default()
            }),
        ),
        Err(Error::NotFound(_)) => (Vec::new(), RunCounters::default(), State::default()),
        Err(e) => return Err(e),
    };
    let objects_configured = cfg
        .objects()
        .is_ok_and(|o| o.s3_enabled() || o.data_dir.is_some());
    let mut types = vec!["database"];
    if objects_configured || records.iter().any(|r| has(r, "objects")) {
        types.push("objects");
    }
    let view = View {
        records: &records,
        finished: records
            .iter()
            .filter(|r| r.status != RunState::Running)
            .collect(),
        types,
    };
    let mut e = Exposition::default();
    view.success(&mut e);
    view.last_run(&mut e);
    e.metric(
        "backup_runs_total",
        "counter",
        "Backup runs by result.",
        vec![
            ("{result=\"ok\"}".into(), counters.ok as f64),
            ("{result=\"partial\"}".into(), counters.partial as f64),
            ("{result=\"failed\"}".into(), counters.failed as f64),
        ],
    );
    if let Some(d) = daemon {
        e.metric(
            "backup_skipped_runs_total",
            "counter",
            "Scheduled runs skipped because another run was still going.",
            vec![(String::new(), d.skipped.load(Ordering::Relaxed) as f64)],
        );
    }
    let good = view
        .records
        .iter()
        .filter(|r| r.status == RunState::Ok)
        .count();
    restore_test(&mut e, &state);
    anomaly(&mut e, cfg, &records, &state);
    e.metric(
        "backup_good_runs",
        "gauge",
        "Runs with status ok in the backup directory.",
        vec![(String::new(), good as f64)],
    );
    remote_metrics(cfg, &mut e);
    Ok(e.0)
}

/// The daemon's own memory, for `/metrics` alone: a push describes runs, not the process that
/// pushed them, and `process_*` names belong to the Pushgateway's own metrics there.
pub fn render_process() -> String {
    let mem = crate::memory::usage();
    let mut e = Exposition::default();
    if let Some(b) = mem.resident {
        e.metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the daemon.",
            vec![(String::new(), b as f64)],
        );
    }
    if let Some(b) = mem.heap_in_use {
        e.metric(
            "backup_daemon_heap_bytes",
            "gauge",
            "Bytes the daemon has allocated and not freed; between runs it stays flat unless memory leaks.",
            vec![(String::new(), b as f64)],
        );
    }
    e.0
}

/// The off-site copy's state, from `.stackback-remote.json`, when a remote is configured.
fn remote_metrics(cfg: &Config, e: &mut Exposition) {
    if !matches!(cfg.remote(), Ok(Some(_))) {
        return;
    }
    let state = BackupDir::open(&cfg.backup_dir())
        .map(|d| crate::catalog::remote_state::RemoteState::load(&d))
        .unwrap_or_default();
    // No attempt yet is not a success: the remote holds nothing of ours.
    let ok = state.last_ok == Some(true);
    e.metric(
        "backup_remote_success",
        "gauge",
        "1 when the last off-site copy copied and checked everything, else 0.",
        vec![(String::new(), if ok { 1.0 } else { 0.0 })],
    );
    if let Some(t) = state.last_success_at {
        e.metric(
            "backup_remote_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last complete off-site copy.",
            vec![(String::new(), t.timestamp() as f64)],
        );
    }
    e.metric(
        "backup_remote_runs",
        "gauge",
        "Runs this host has copied off-site and not seen deleted there.",
        vec![(String::new(), state.runs.len() as f64)],
    );
}

/// The last restore test, from the state file (so pruning the tested run does not reset it).
/// Left out until a restore test ran: the alert rules then have no series to fire on.
fn restore_test(e: &mut Exposition, state: &State) {
    let Some(t) = &state.restore_test else { return };
    let one = |v: f64| vec![(String::new(), v)];
    e.metric(
        "backup_restore_test_success",
        "gauge",
        "1 if the last restore test loaded the backup and every count matched, else 0.",
        one(f64::from(t.last_ok)),
    );
    e.metric(
        "backup_restore_test_last_run_timestamp_seconds",
        "gauge",
        "When the last restore test finished, whatever its result (Unix time).",
        one(ts(t.last_tested_at)),
    );
    if let Some(at) = t.last_success_at {
        e.metric(
            "backup_restore_test_last_success_timestamp_seconds",
            "gauge",
            "When the newest restore test that passed finished (Unix time).",
            one(ts(at)),
        );
    }
}

/// `backup_anomaly`: 1 while a size anomaly is open (the newest judged good run has anomalies
/// nobody acknowledged), else 0. Left out when checks are off, or their settings are broken (the
/// run itself refuses those).
fn anomaly(e: &mut Exposition, cfg: &Config, records: &[RunRecord], state: &State) {
    let Ok(a) = cfg.anomaly() else { return };
    if a.rules.is_none() {
        return;
    }
    let open = crate::anomaly::open(records, state.anomaly_mark().as_ref());
    e.metric(
        "backup_anomaly",
        "gauge",
        "1 while the newest good run's size anomaly (a dump, table, or bucket far from the median of the recent good runs) is open: no later run back within bounds, not acknowledged.",
        vec![(String::new(), f64::from(open.is_some()))],
    );
}

/// How a push treats the group already on the Pushgateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// PUT: the group becomes exactly these metrics.
    Replace,
    /// POST: these metrics replace their namesakes; the others stay.
    Add,
}

/// The metrics of a run that could not start: every backup type failed, now.
pub fn start_failure_text(cfg: &Config) -> String {
    let mut types = vec!["database"];
    if cfg
        .objects()
        .is_ok_and(|o| o.s3_enabled() || o.data_dir.is_some())
    {
        types.push("objects");
    }
    let mut e = Exposition::default();
    e.metric(
        "backup_success",
        "gauge",
        "1 if the last run backed this type up and verified it, else 0.",
        types.iter().map(|ty| (type_label(ty), 0.0)).collect(),
    );
    e.metric(
        "backup_last_run_timestamp_seconds",
        "gauge",
        "When the last run finished, whatever its result (Unix time).",
        vec![(String::new(), ts(chrono::Utc::now()))],
    );
    e.0
}

/// The job name of the first round's pushes: its group is deleted, so it cannot alert forever.
const OLD_JOB: &str = "stackback";

/// Sends metrics to the group of `target`. A replacing push also deletes the group of the first
/// round's job name for this instance, which nothing updates any more.
pub async fn send(
    target: &PushTarget,
    text: &str,
    how: Push,
) -> std::result::Result<String, String> {
    let url = target.url();
    if how == Push::Replace && target.job != OLD_JOB {
        let old = PushTarget {
            job: OLD_JOB.into(),
            ..target.clone()
        };
        // Best effort: a Pushgateway without that group answers 202 all the same.
        let _ = super::http().delete(old.url()).send().await;
    }
    let req = match how {
        Push::Replace => super::http().put(&url),
        Push::Add => super::http().post(&url),
    };
    let resp = req
        .header("content-type", "text/plain; version=0.0.4")
        .body(text.to_string())
        .send()
        .await
        .map_err(|e| {
            // The URL may carry basic-auth credentials: show it, and the error's copy, without.
            let shown = crate::redact::redact_url_password(&url);
            let why = super::webhook::error_chain(&e).replace(url.as_str(), &shown);
            format!("push to {shown} failed: {why}")
        })?;
    if resp.status().is_success() {
        Ok(format!("HTTP {}", resp.status().as_u16()))
    } else {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(format!(
            "Pushgateway answered HTTP {status}: {}",
            body.trim()
        ))
    }
}
