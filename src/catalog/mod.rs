//! The catalog: the run records of one backup directory, and what they say.
//!
//! Verify, list, restore, retention and metrics read the run records; only an artifact that an
//! `ok` or `partial` record lists with a passed verification is a backup. Files that look like
//! artifacts but that no record names (an old shell script's backups) are "unmanaged".

mod anomalies;
mod counts;
mod naming;
mod record;
pub mod remote_state;
mod restore_test;
pub mod state;

use std::collections::HashSet;
use std::path::Path;

pub use anomalies::{Anomaly, AnomalyMetric, AnomalyRule};
pub use counts::{record_tables, recorded_tables, RowCounts, TableCount};
pub use naming::{index_file_name, is_artifact_of, is_sealed_name, ArtifactKind, RunId};
pub use record::{
    ArtifactRecord, Encryption, LowSpace, PruneSummary, RunRecord, RunState, Step, Verification,
    VerifyLevel, SCHEMA_VERSION,
};
pub use restore_test::{
    BucketTestResult, DbTestResult, ObjectMismatch, RestoreTestRecord, RowMismatch,
};

use crate::error::{Error, Result};
use crate::sink::local::{BackupDir, RETIRED_PREFIX};

pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A run record as found on disk, or why it could not be read.
#[derive(Debug, Clone)]
pub enum Entry {
    Record(Box<RunRecord>),
    Unreadable {
        run_id: RunId,
        file: String,
        error: String,
    },
}

impl Entry {
    fn order(&self) -> (u64, &RunId) {
        match self {
            Entry::Record(r) => r.order(),
            Entry::Unreadable { run_id, .. } => (0, run_id),
        }
    }
}

/// Reads and writes the run records of one backup directory.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: BackupDir,
}

impl Catalog {
    pub fn new(dir: BackupDir) -> Self {
        Catalog { dir }
    }

    pub fn dir(&self) -> &BackupDir {
        &self.dir
    }

    /// Atomically writes a record (with a fresh self-checksum).
    pub fn write(&self, record: &RunRecord) -> Result<()> {
        self.dir
            .write_atomic(&record.file_name(), &record.to_json())
    }

    /// Loads one record by id.
    pub fn load(&self, run_id: &RunId) -> Result<RunRecord> {
        read_record(&self.dir.join(&run_id.record_file()))
    }

    /// Every record in the directory, oldest first: by sequence, then id (unreadable records,
    /// whose sequence is unknown, by id before the others).
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for name in self.dir.file_names()? {
            let Some(id) = RunId::from_record_file(&name) else {
                continue;
            };
            match read_record(&self.dir.join(&name)) {
                Ok(r) => out.push(Entry::Record(Box::new(r))),
                Err(e) => out.push(Entry::Unreadable {
                    run_id: id,
                    file: name,
                    error: e.to_string(),
                }),
            }
        }
        out.sort_by(|a, b| a.order().cmp(&b.order()));
        Ok(out)
    }

    /// The sequence a new run takes: the highest any record holds, plus one.
    pub fn next_sequence(&self) -> Result<u64> {
        Ok(self
            .records()?
            .iter()
            .filter_map(|r| r.sequence)
            .max()
            .unwrap_or(0)
            + 1)
    }

    /// Every readable record, oldest first.
    pub fn records(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|e| match e {
                Entry::Record(r) => Some(*r),
                Entry::Unreadable { .. } => None,
            })
            .collect())
    }

    /// `latest`: the newest ok run, if any.
    pub fn latest_ok(&self) -> Result<Option<RunRecord>> {
        Ok(self
            .records()?
            .into_iter()
            .rev()
            .find(|r| r.status == RunState::Ok))
    }

    /// `latest` for a kind: the newest ok run that holds a verified artifact of `kind`.
    pub fn latest_with(&self, kind: ArtifactKind) -> Result<RunRecord> {
        self.records()?
            .into_iter()
            .rev()
            .find(|r| r.status == RunState::Ok && r.good_artifacts(kind).next().is_some())
            .ok_or_else(|| {
                Error::NoBackup(format!(
                    "no ok run with a verified {kind} backup in {}",
                    self.dir.path().display()
                ))
            })
    }

    /// Files of `run` (by the id in their names, temp files included) that no record names: what a
    /// failed or killed run may leave behind. Records and retired records are never among them.
    pub fn strays(&self, run: &RunId, named: &HashSet<String>) -> Result<Vec<String>> {
        Ok(self
            .dir
            .file_names()?
            .into_iter()
            .filter(|n| {
                !n.starts_with("run_")
                    && !n.starts_with(RETIRED_PREFIX)
                    && !named.contains(n)
                    && RunId::from_artifact_name(n).as_ref() == Some(run)
            })
            .collect())
    }

    /// The newest record that lists `file`, with that artifact.
    pub fn find_file(&self, file: &str) -> Result<Option<(RunRecord, ArtifactRecord)>> {
        for r in self.records()?.into_iter().rev() {
            if let Some(a) = r.artifacts.iter().find(|a| a.file == file).cloned() {
                return Ok(Some((r, a)));
            }
        }
        Ok(None)
    }
}

fn read_record(path: &Path) -> Result<RunRecord> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read run record", path, e))?;
    RunRecord::from_json(&bytes).map_err(|e| Error::Record {
        path: path.to_path_buf(),
        problem: e,
    })
}
