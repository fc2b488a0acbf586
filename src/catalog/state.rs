//! `.stackback-state.json`: what must outlive the run records it came from.
//!
//! Pruning deletes run records, and with them their `restore_test` sections; the time of the last
//! successful restore test (a metric, an alert rule) must not go back to "never" because of that.
//! This small file beside the records keeps such facts, and the operator's acknowledgements of
//! size anomalies (`stackback anomaly ack`): a decision taken after the run, which must not
//! change the run's record (its checksum says "as the run wrote it"), and whose place in the
//! history (the acknowledged run's sequence) must outlive the pruning of that run. Sections this build does not know (an
//! off-site copy's `remote` state, say) are kept as they are when the file is rewritten.
//!
//! Writers read, change and write the file while holding the backup directory's lock
//! ([`crate::sink::local::BackupDir::lock`]), so two writers never lose each other's sections. The
//! write is atomic (temp file, fsync, rename, fsync of the directory) and the file is 0600.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::naming::RunId;
use crate::error::{Error, Result};
use crate::sink::local::BackupDir;

/// The state file's name in the backup directory.
pub const STATE_FILE: &str = ".stackback-state.json";

/// The last restore test, and the last one that passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTestState {
    pub last_run_id: RunId,
    pub last_tested_at: DateTime<Utc>,
    pub last_ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_run_id: Option<RunId>,
    /// When the newest restore test that passed finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
}

/// An operator's acknowledgement of a run's anomalies (`stackback anomaly ack RUN`): the change
/// was expected. It covers that run and every earlier one, and the run becomes where later runs'
/// comparisons start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyAck {
    pub run_id: RunId,
    /// The run's sequence: what later runs are ordered against, even once the run is pruned.
    pub sequence: u64,
    pub acked_at: DateTime<Utc>,
    pub host: String,
    /// The login that acknowledged, when the environment says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How many acknowledgements the state file keeps: only the newest matters to comparisons, the
/// others are history for people.
const ACKS_KEPT: usize = 50;

/// Acknowledged anomalies, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyState {
    #[serde(default)]
    pub acks: Vec<AnomalyAck>,
}

impl AnomalyState {
    /// The newest acknowledged run, as `(sequence, run id)`: anomalies of runs up to it are
    /// acknowledged.
    pub fn mark(&self) -> Option<(u64, &RunId)> {
        self.acks.iter().map(|a| (a.sequence, &a.run_id)).max()
    }
}

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTestState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalyState>,
    /// Sections of other features (or of a later build): kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl State {
    /// Reads the state of `dir`; a directory without the file has the empty state.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed: callers that only report (metrics) may
    /// fall back to the empty state, writers must not (they would drop what it holds).
    pub fn load(dir: &BackupDir) -> Result<State> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Step {
                what: format!("reading {}", path.display()),
                detail: format!("not a stackback state file: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::io("cannot read", path, e)),
        }
    }

    /// Writes the state atomically, 0600. The caller holds the directory lock.
    pub fn save(&self, dir: &BackupDir) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("the state serialises");
        bytes.push(b'\n');
        dir.write_atomic(STATE_FILE, &bytes)
    }

    /// Folds a finished restore test in: the last one, and the last success unless this one
    /// failed.
    pub fn note_restore_test(&mut self, run: &RunId, at: DateTime<Utc>, ok: bool) {
        let before = self.restore_test.take();
        let (success_run, success_at) = match (&before, ok) {
            (_, true) => (Some(run.clone()), Some(at)),
            (Some(b), false) => (b.last_success_run_id.clone(), b.last_success_at),
            (None, false) => (None, None),
        };
        self.restore_test = Some(RestoreTestState {
            last_run_id: run.clone(),
            last_tested_at: at,
            last_ok: ok,
            last_success_run_id: success_run,
            last_success_at: success_at,
        });
    }

    /// Records an acknowledgement, keeping the newest [`ACKS_KEPT`].
    pub fn note_anomaly_ack(&mut self, ack: AnomalyAck) {
        let acks = &mut self.anomaly.get_or_insert_with(AnomalyState::default).acks;
        acks.push(ack);
        let extra = acks.len().saturating_sub(ACKS_KEPT);
        acks.drain(..extra);
    }

    /// The newest acknowledged run, as `(sequence, run id)`.
    pub fn anomaly_mark(&self) -> Option<(u64, RunId)> {
        self.anomaly
            .as_ref()
            .and_then(|a| a.mark())
            .map(|(s, id)| (s, id.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn unknown_sections_survive_and_failures_keep_the_last_success() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BackupDir::create(tmp.path()).unwrap();
        assert_eq!(State::load(&dir).unwrap(), State::default());
        std::fs::write(
            dir.join(STATE_FILE),
            r#"{"remote": {"target": "s3://offsite", "last_run": "20261101_020000"}}"#,
        )
        .unwrap();
        let t = |d| Utc.with_ymd_and_hms(2026, 11, d, 3, 0, 0).unwrap();
        let run = |d| RunId::from_time(t(d));
        let mut s = State::load(&dir).unwrap();
        s.note_restore_test(&run(1), t(1), true);
        s.note_restore_test(&run(2), t(2), false);
        s.save(&dir).unwrap();
        let back = State::load(&dir).unwrap();
        let rt = back.restore_test.as_ref().unwrap();
        assert!(!rt.last_ok);
        assert_eq!(rt.last_run_id, run(2));
        assert_eq!(rt.last_success_at, Some(t(1)));
        assert_eq!(rt.last_success_run_id, Some(run(1)));
        assert_eq!(back.extra["remote"]["target"], "s3://offsite");
        let mode = std::fs::metadata(dir.join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.join(STATE_FILE), "{not json").unwrap();
        assert!(State::load(&dir).is_err());
    }

    #[test]
    fn acknowledgements_are_kept_bounded_and_the_mark_is_the_newest_by_sequence() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BackupDir::create(tmp.path()).unwrap();
        let t = |d| Utc.with_ymd_and_hms(2026, 11, d, 3, 0, 0).unwrap();
        let ack = |seq: u64, day| AnomalyAck {
            run_id: RunId::from_time(t(day)),
            sequence: seq,
            acked_at: t(day),
            host: "h".into(),
            user: None,
            note: Some("migration".into()),
        };
        let mut s = State::default();
        assert_eq!(s.anomaly_mark(), None);
        // A run dated later but earlier in the sequence (its clock was ahead) is not the mark.
        s.note_anomaly_ack(ack(7, 20));
        s.note_anomaly_ack(ack(5, 28));
        assert_eq!(s.anomaly_mark(), Some((7, RunId::from_time(t(20)))));
        for i in 0..60 {
            s.note_anomaly_ack(ack(100 + i, 1));
        }
        assert_eq!(s.anomaly.as_ref().unwrap().acks.len(), ACKS_KEPT);
        s.save(&dir).unwrap();
        let back = State::load(&dir).unwrap();
        assert_eq!(back.anomaly_mark().unwrap().0, 159);
        assert_eq!(back, s);
    }
}
