//! How a run ends: a failure recorded (and what it wrote that could pass for a backup removed),
//! the comparison with recent runs, the prune after a good run, and the note of what a sealed
//! artifact's check covered.

use chrono::Utc;
use tracing::warn;

use super::*;

/// Marks the run partial or failed, and removes whatever it wrote that could pass for a backup.
pub(super) fn record_failure(
    catalog: &Catalog,
    rec: &mut RunRecord,
    step: Step,
    e: &Error,
    redactor: &Redactor,
) -> Result<()> {
    let db_ok = rec
        .artifacts
        .iter()
        .any(|a| a.kind == ArtifactKind::Database && a.verification.ok);
    let later_step = matches!(step, Step::Globals | Step::Volume | Step::Objects(_));
    rec.status = if db_ok && later_step {
        RunState::Partial
    } else {
        RunState::Failed
    };
    if rec.status == RunState::Failed {
        rec.artifacts.clear();
    }
    // Whatever this run wrote that its record does not list cannot pass for a backup: an
    // artifact cut off by an abort between commit and verification, say.
    let keep = rec.files().map(String::from).collect();
    for name in catalog.strays(&rec.run_id, &keep)? {
        catalog.dir().remove(&name)?;
    }
    let mut text = redactor.redact(&e.to_string());
    if let Some(h) = e.hint() {
        text.push_str(&format!(" (hint: {h})"));
    }
    warn!(run = %rec.run_id, step = %step, error = %redactor.redact(&e.to_string()), "backup run failed");
    rec.failed_step = Some(step);
    rec.error = Some(text);
    Ok(())
}

/// Records the run's anomalies against the good runs before it. A check that cannot read the
/// records leaves the run unjudged with a warning: the backup itself is good.
pub(super) fn compare_with_recent_runs(
    dir: &BackupDir,
    rec: &mut RunRecord,
    rules: &crate::anomaly::Rules,
) {
    match crate::ops::anomaly::check(dir, rec, rules) {
        Ok(found) => {
            if let Some(a) = found.as_ref().filter(|a| !a.is_empty()) {
                warn!(run = %rec.run_id, anomalies = %crate::anomaly::summary(a), "size anomaly: the backup is valid, but differs from the recent good runs");
            }
            rec.anomalies = found;
        }
        Err(e) => {
            let msg = format!("the anomaly check could not read the earlier runs: {e}");
            warn!("{msg}");
            rec.warnings.push(msg);
        }
    }
}

pub(super) fn prune_after(
    dir: &BackupDir,
    retention: &crate::config::RetentionConfig,
    anomaly: &crate::config::AnomalyConfig,
    run_id: &RunId,
    redactor: &Redactor,
) -> PruneSummary {
    let opts = crate::ops::prune::PruneOptions {
        current: Some(run_id.clone()),
        ..Default::default()
    };
    match crate::ops::prune::prune_locked(dir, retention, anomaly, Utc::now(), &opts) {
        Ok(p) => PruneSummary {
            deleted_runs: p.deleted_runs(),
            freed_bytes: p.freed_bytes,
            error: None,
        },
        Err(e) => {
            warn!(error = %e, "pruning old backups failed; the new backup is good");
            PruneSummary {
                deleted_runs: Vec::new(),
                freed_bytes: 0,
                error: Some(redactor.redact(&e.to_string())),
            }
        }
    }
}

/// A stored-level check of a sealed artifact, with what was checked in the stream before the seal.
pub(super) fn in_stream_note(kind: ArtifactKind, c: &Checked) -> String {
    match (c.level, kind) {
        (VerifyLevel::Full, _) => c.detail.clone(),
        (VerifyLevel::Stored, ArtifactKind::Database | ArtifactKind::Globals) => format!(
            "dump complete and plain blake3 taken in the stream before encryption; {}",
            c.detail
        ),
        (VerifyLevel::Stored, ArtifactKind::Objects) => format!(
            "every object hashed into the index in the stream before encryption; {}",
            c.detail
        ),
        (VerifyLevel::Stored, ArtifactKind::Volume) => format!(
            "plain blake3 taken in the stream before encryption; {}",
            c.detail
        ),
    }
}
