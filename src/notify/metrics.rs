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

use crate::catalog::{ArtifactKind, Catalog, RunRecord, RunState};
use crate::config::Config;
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

/// The metrics text for the backup directory of `cfg`.
/// `daemon` is `None` outside the daemon: a manual run's push then leaves the daemon-only counter
/// out instead of resetting it.
pub fn render(cfg: &Config, daemon: Option<&DaemonCounters>) -> Result<String> {
    let records = match BackupDir::open(&cfg.backup_dir()) {
        Ok(d) => Catalog::new(d).records()?,
        Err(Error::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let counters = BackupDir::open(&cfg.backup_dir())
        .map(|d| RunCounters::load(&d))
        .unwrap_or_default();
    let finished: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.status != RunState::Running)
        .collect();
    let last = finished.last().copied();
    let mut types = vec!["database"];
    let objects_configured = cfg
        .objects()
        .is_ok_and(|o| o.s3_enabled() || o.data_dir.is_some());
    if objects_configured || records.iter().any(|r| has(r, "objects")) {
        types.push("objects");
    }

    let mut t = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(t, "# HELP {name} {help}");
        let _ = writeln!(t, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(t, "{name}{labels} {v}");
        }
    };
    let ts = |d: chrono::DateTime<chrono::Utc>| d.timestamp_millis() as f64 / 1000.0;

    metric(
        "backup_success",
        "gauge",
        "1 if the last run backed this type up and verified it, else 0.",
        last.map(|r| {
            types
                .iter()
                .map(|ty| {
                    (
                        format!("{{type=\"{ty}\"}}"),
                        if has(r, ty) && r.status != RunState::Failed {
                            1.0
                        } else {
                            0.0
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default(),
    );
    metric(
        "backup_last_success_timestamp_seconds",
        "gauge",
        "When the newest verified backup of this type finished (Unix time).",
        types
            .iter()
            .filter_map(|ty| {
                finished
                    .iter()
                    .rev()
                    .find(|r| r.has_good_artifacts() && has(r, ty))
                    .map(|r| {
                        (
                            format!("{{type=\"{ty}\"}}"),
                            ts(r.finished_at.unwrap_or(r.started_at)),
                        )
                    })
            })
            .collect(),
    );
    if let Some(r) = last {
        metric(
            "backup_last_run_timestamp_seconds",
            "gauge",
            "When the last run finished, whatever its result (Unix time).",
            vec![(String::new(), ts(r.finished_at.unwrap_or(r.started_at)))],
        );
        metric(
            "backup_duration_seconds",
            "gauge",
            "How long the last run took.",
            vec![(
                String::new(),
                r.finished_at.map_or(0.0, |f| {
                    (f - r.started_at).num_milliseconds() as f64 / 1000.0
                }),
            )],
        );
        metric(
            "backup_size_bytes",
            "gauge",
            "Stored size of the last run's artifacts of this type.",
            types
                .iter()
                .map(|ty| {
                    let bytes: u64 = r
                        .artifacts
                        .iter()
                        .filter(|a| kind_label(a.kind) == *ty)
                        .map(|a| a.stored_bytes)
                        .sum();
                    (format!("{{type=\"{ty}\"}}"), bytes as f64)
                })
                .collect(),
        );
        let objects: u64 = r.artifacts.iter().filter_map(|a| a.objects).sum();
        if types.contains(&"objects") {
            metric(
                "backup_objects_total",
                "gauge",
                "Objects in the last run's bucket backups.",
                vec![(String::new(), objects as f64)],
            );
        }
    }
    metric(
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
        metric(
            "backup_skipped_runs_total",
            "counter",
            "Scheduled runs skipped because another run was still going.",
            vec![(String::new(), d.skipped.load(Ordering::Relaxed) as f64)],
        );
    }
    metric(
        "backup_good_runs",
        "gauge",
        "Runs with status ok in the backup directory.",
        vec![(
            String::new(),
            records.iter().filter(|r| r.status == RunState::Ok).count() as f64,
        )],
    );
    Ok(t)
}

/// Replaces this host's group on the Pushgateway (job `stackback`, instance = host name).
pub async fn push(base: &str, text: &str) -> std::result::Result<String, String> {
    let url = format!(
        "{}/metrics/job/stackback/instance/{}",
        base.trim_end_matches('/'),
        crate::catalog::host_name()
    );
    let resp = super::http()
        .put(&url)
        .header("content-type", "text/plain; version=0.0.4")
        .body(text.to_string())
        .send()
        .await
        .map_err(|e| format!("push to {url} failed: {e}"))?;
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
