//! Size anomalies on a backup directory: the check a run records ([`check`]), the open anomaly
//! as `status`, metrics, prune and the page read it ([`open`], [`pins`]), and the operator's
//! acknowledgement ([`ack`], `stackback anomaly ack RUN`). The rule itself is
//! [`crate::anomaly`], pure.

use chrono::Utc;
use serde::Serialize;

use crate::anomaly::{Open, Rules};
use crate::catalog::state::{AnomalyAck, State};
use crate::catalog::{Anomaly, Catalog, RunId, RunRecord, RunState};
use crate::config::{AnomalyConfig, Config};
use crate::error::{Error, Result};
use crate::retention::Pin;
use crate::sink::local::BackupDir;

/// The newest acknowledgement of `dir`'s state file. An unreadable state file counts as none:
/// callers then report an acknowledged anomaly as still open, and keep more, never less.
fn mark(dir: &BackupDir) -> Option<(u64, RunId)> {
    match State::load(dir) {
        Ok(s) => s.anomaly_mark(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the state file: anomaly acknowledgements ignored");
            None
        }
    }
}

/// Compares the finished run `rec` with the good runs before it in `dir`.
pub fn check(dir: &BackupDir, rec: &RunRecord, rules: &Rules) -> Result<Option<Vec<Anomaly>>> {
    let records = Catalog::new(dir.clone()).records()?;
    let mark = mark(dir);
    Ok(crate::anomaly::judge(&records, rec, rules, mark.as_ref()))
}

/// The open anomaly among `records` (in sequence order), when checks are on.
pub fn open_in(
    records: &[RunRecord],
    mark: Option<&(u64, RunId)>,
    cfg: &AnomalyConfig,
) -> Option<Open> {
    cfg.rules?;
    crate::anomaly::open(records, mark)
}

/// The open anomaly of `dir`, when checks are on.
pub fn open(dir: &BackupDir, cfg: &AnomalyConfig) -> Result<Option<Open>> {
    if cfg.rules.is_none() {
        return Ok(None);
    }
    let records = Catalog::new(dir.clone()).records()?;
    Ok(open_in(&records, mark(dir).as_ref(), cfg))
}

/// What retention must keep for anomalies: the last good run before an open one.
pub fn pins(dir: &BackupDir, records: &[RunRecord], cfg: &AnomalyConfig) -> Vec<Pin> {
    let Some(o) = open_in(records, mark(dir).as_ref(), cfg) else {
        return Vec::new();
    };
    let Some(keep) = o.keep else {
        return Vec::new();
    };
    vec![Pin {
        id: keep,
        reason: format!(
            "the last good run before the size anomaly of run {} ({}): kept while the anomaly is open, until a run is back within bounds or `stackback anomaly ack {}`",
            o.since,
            crate::anomaly::summary(&o.anomalies),
            o.run_id
        ),
    }]
}

/// What `stackback anomaly ack` did.
#[derive(Debug, Clone, Serialize)]
pub struct AckReport {
    pub run_id: RunId,
    /// The anomalies of the run, now acknowledged.
    pub anomalies: Vec<Anomaly>,
    /// False when the run was acknowledged already: nothing was written.
    pub recorded: bool,
    /// The anomaly still open after this acknowledgement (a newer run's), if any.
    pub still_open: Option<Open>,
    /// The metrics push that carries `backup_anomaly` to the Pushgateway, when one is configured.
    pub pushgateway: Option<crate::notify::ChannelResult>,
}

/// Records that the anomalies of `target` (a run id, or `latest`: the newest good run) are an
/// expected change: they and those of every earlier run stop counting as open, and later runs
/// are compared with `target` and the runs after it. Written to the state file under the
/// directory lock; the metrics are pushed again, so `backup_anomaly` drops without waiting for
/// the next run.
///
/// # Errors
/// Checks are off, the run does not exist, is not a good run, or has no anomalies; the directory
/// lock is held by a run; the state file cannot be read or written.
pub async fn ack(cfg: &Config, target: &str, note: Option<String>) -> Result<AckReport> {
    let anomaly = *cfg.anomaly()?;
    if anomaly.rules.is_none() {
        return Err(Error::Usage(
            "anomaly checks are off (BACKUP_ANOMALY_DROP=off): there is nothing to acknowledge"
                .into(),
        ));
    }
    let dir = BackupDir::open(&cfg.backup_dir())?;
    let report = {
        let _lock = dir.lock()?;
        let catalog = Catalog::new(dir.clone());
        let records = catalog.records()?;
        let rec = select(&records, target)?;
        let anomalies = rec.anomalies.clone().unwrap_or_default();
        if anomalies.is_empty() {
            return Err(Error::Usage(format!(
                "run {} has no anomalies to acknowledge ({})",
                rec.run_id,
                if rec.anomalies.is_some() {
                    "every value was within bounds"
                } else {
                    "it was not compared: too few good runs before it, or checks were off"
                }
            )));
        }
        let sequence = rec.sequence.unwrap_or(0);
        let mut state = State::load(&dir)?;
        let done = state
            .anomaly_mark()
            .is_some_and(|m| (sequence, &rec.run_id) <= (m.0, &m.1));
        if !done {
            state.note_anomaly_ack(AnomalyAck {
                run_id: rec.run_id.clone(),
                sequence,
                acked_at: Utc::now(),
                host: crate::catalog::host_name(),
                user: std::env::var("SUDO_USER")
                    .or_else(|_| std::env::var("USER"))
                    .ok()
                    .filter(|u| !u.is_empty()),
                note,
            });
            state.save(&dir)?;
        }
        let mark = state.anomaly_mark();
        AckReport {
            run_id: rec.run_id.clone(),
            anomalies,
            recorded: !done,
            still_open: open_in(&records, mark.as_ref(), &anomaly),
            pushgateway: None,
        }
    };
    tracing::info!(run = %report.run_id, "size anomalies acknowledged");
    let pushgateway = match cfg.notify() {
        Ok(n) => crate::notify::push_metrics(cfg, n, &cfg.redactor(), None).await,
        Err(_) => None,
    };
    Ok(AckReport {
        pushgateway,
        ..report
    })
}

/// The good run `target` names.
fn select<'a>(records: &'a [RunRecord], target: &str) -> Result<&'a RunRecord> {
    let rec = if target == "latest" {
        records
            .iter()
            .rev()
            .find(|r| r.status == RunState::Ok)
            .ok_or_else(|| Error::NoBackup("there is no good run".into()))?
    } else {
        let id = RunId::try_from(target.to_string()).map_err(|_| {
            Error::Usage(format!(
                "{target:?} is not a run id (YYYYMMDD_HHMMSS) or `latest`"
            ))
        })?;
        records
            .iter()
            .find(|r| r.run_id == id)
            .ok_or_else(|| Error::NotFound(format!("run {id}: no such run record")))?
    };
    if rec.status != RunState::Ok || !rec.checksum_ok() {
        return Err(Error::Usage(format!(
            "run {} is not a good run ({}): only good runs are compared, and have anomalies",
            rec.run_id,
            if rec.checksum_ok() {
                rec.status.as_str()
            } else {
                "its record was modified"
            }
        )));
    }
    Ok(rec)
}
