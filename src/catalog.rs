//! Run records: what stackback knows about each backup run, one `run_<id>.json` per run.
//!
//! A run writes its record twice: at the start with status `running` (so a crash leaves a record
//! that says the run never finished, and its leftovers stay attributable), and at the end with
//! status ok, partial or failed, after every artifact was written and verified. Only an artifact
//! that an `ok` or `partial` record lists with a passed verification is a backup. Files that match
//! artifact names but that no record names (an old shell script's backups) are "unmanaged".
//!
//! Each record carries a SHA-256 of its own canonical JSON (`record_sha256`), so an edited record is
//! detected by `verify` rather than trusted. Schema: docs/run-record.md.

use std::fmt;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::pipeline::Compression;
use crate::sink::local::BackupDir;

/// Version of the run-record schema this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A run id: the run's start time in UTC, `YYYYMMDD_HHMMSS`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    pub const FORMAT: &'static str = "%Y%m%d_%H%M%S";

    pub fn from_time(t: DateTime<Utc>) -> Self {
        RunId(t.format(Self::FORMAT).to_string())
    }

    pub fn time(&self) -> DateTime<Utc> {
        let naive = NaiveDateTime::parse_from_str(&self.0, Self::FORMAT)
            .expect("a RunId is validated when built");
        Utc.from_utc_datetime(&naive)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Finds the run id that ends an artifact's stem: `db_app_20260101_020000.sql.gz`,
    /// `minio_my.bucket_20260101_020000.tar.gz` (bucket names may hold dots).
    pub fn from_artifact_name(name: &str) -> Option<RunId> {
        let b = name.as_bytes();
        (1..=b.len().saturating_sub(15)).rev().find_map(|i| {
            let ends_ok = i + 15 == b.len() || b[i + 15] == b'.';
            if b[i - 1] != b'_' || !ends_ok || !name.is_char_boundary(i) {
                return None;
            }
            RunId::try_from(name[i..i + 15].to_string()).ok()
        })
    }
}

impl TryFrom<String> for RunId {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        if s.len() == 15 && NaiveDateTime::parse_from_str(&s, Self::FORMAT).is_ok() {
            Ok(RunId(s))
        } else {
            Err(format!("{s:?} is not a run id (YYYYMMDD_HHMMSS)"))
        }
    }
}

impl From<RunId> for String {
    fn from(r: RunId) -> String {
        r.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started, not finished: a crash if no process holds the directory lock.
    Running,
    /// Every artifact written and verified.
    Ok,
    /// The database artifact is good, a bucket failed. Alerted as a failure; not "good" for retention.
    Partial,
    Failed,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// `db_<db>_<id>.sql[.gz|.zst]`: pg_dump plain SQL.
    Database,
    /// `globals_<db>_<id>.sql[.gz|.zst]`: roles and tablespaces.
    Globals,
    /// `minio_<bucket>_<id>.tar[.gz|.zst]`: a bucket through the S3 API.
    Objects,
    /// `minio_<name>_<id>.tar[.gz|.zst]`: a data directory tarred as is.
    Volume,
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArtifactKind::Database => "database",
            ArtifactKind::Globals => "globals",
            ArtifactKind::Objects => "objects",
            ArtifactKind::Volume => "volume",
        })
    }
}

/// The result of checking one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    pub checked_at: DateTime<Utc>,
    pub detail: String,
}

/// One file a run produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub kind: ArtifactKind,
    pub file: String,
    /// The database name or bucket this artifact holds.
    pub source: String,
    pub compression: Compression,
    pub stored_bytes: u64,
    pub stored_sha256: String,
    pub plain_bytes: u64,
    pub plain_sha256: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Objects in a bucket artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    /// The object index beside a bucket archive, and its SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_sha256: Option<String>,
    /// Objects listed but gone before they could be fetched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    pub verification: Verification,
}

/// What the automatic prune at the end of a good run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneSummary {
    pub deleted_runs: Vec<RunId>,
    pub freed_bytes: u64,
    /// Set when pruning failed; the backup itself is still good.
    pub error: Option<String>,
}

/// Everything known about one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: u32,
    pub run_id: RunId,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The step that failed: `preflight`, `database`, `globals`, `objects:<bucket>`, `verify`...
    pub failed_step: Option<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    pub tool_version: String,
    pub host: String,
    pub pg_dump_version: Option<String>,
    pub server_version: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactRecord>,
    /// Retention applied after this run verified (ok runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSummary>,
    /// SHA-256 of this record's canonical JSON with this field empty.
    #[serde(default)]
    pub record_sha256: String,
}

impl RunRecord {
    pub fn new(run_id: RunId, started_at: DateTime<Utc>) -> Self {
        RunRecord {
            schema: SCHEMA_VERSION,
            run_id,
            status: RunStatus::Running,
            started_at,
            finished_at: None,
            failed_step: None,
            error: None,
            warnings: Vec::new(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            host: host_name(),
            pg_dump_version: None,
            server_version: None,
            artifacts: Vec::new(),
            prune: None,
            record_sha256: String::new(),
        }
    }

    pub fn file_name(run_id: &RunId) -> String {
        format!("run_{run_id}.json")
    }

    /// True for ok and partial runs: they hold at least one verified artifact.
    pub fn has_good_artifacts(&self) -> bool {
        matches!(self.status, RunStatus::Ok | RunStatus::Partial)
    }

    /// The artifacts of a kind that passed verification in a finished run.
    pub fn good_artifacts(&self, kind: ArtifactKind) -> impl Iterator<Item = &ArtifactRecord> {
        let good = self.has_good_artifacts();
        self.artifacts
            .iter()
            .filter(move |a| good && a.kind == kind && a.verification.ok)
    }

    fn canonical_sha256(&self) -> String {
        let mut copy = self.clone();
        copy.record_sha256.clear();
        let bytes = serde_json::to_vec(&copy).expect("a run record always serialises");
        hex::encode(Sha256::digest(&bytes))
    }

    /// Serialises with a fresh self-checksum.
    pub fn to_json(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.record_sha256 = self.canonical_sha256();
        let mut out = serde_json::to_vec_pretty(&copy).expect("a run record always serialises");
        out.push(b'\n');
        out
    }

    /// True when the stored self-checksum matches the content.
    pub fn checksum_ok(&self) -> bool {
        self.record_sha256 == self.canonical_sha256()
    }
}

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

/// Reads and writes the run records of one backup directory.
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: BackupDir,
}

impl Catalog {
    pub fn new(dir: BackupDir) -> Self {
        Catalog { dir }
    }

    /// Atomically writes a record (with a fresh self-checksum).
    pub fn write(&self, record: &RunRecord) -> Result<()> {
        self.dir
            .write_atomic(&RunRecord::file_name(&record.run_id), &record.to_json())
    }

    /// Loads one record by id.
    pub fn load(&self, run_id: &RunId) -> Result<RunRecord> {
        let name = RunRecord::file_name(run_id);
        read_record(&self.dir.join(&name))
    }

    /// Every record in the directory, oldest first.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for name in self.dir.file_names()? {
            let Some(id) = name
                .strip_prefix("run_")
                .and_then(|s| s.strip_suffix(".json"))
                .and_then(|s| RunId::try_from(s.to_string()).ok())
            else {
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
        Ok(out)
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

    /// `latest` resolution: the newest ok run that holds a verified artifact of `kind`.
    pub fn latest_with(&self, kind: ArtifactKind) -> Result<RunRecord> {
        self.records()?
            .into_iter()
            .rev()
            .find(|r| r.status == RunStatus::Ok && r.good_artifacts(kind).next().is_some())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no ok run with a verified {kind} backup in {}",
                    self.dir.path().display()
                ))
            })
    }

    /// The ok or partial run whose record lists `file`, if any.
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
    let record: RunRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Step {
        what: format!("reading run record {}", path.display()),
        detail: format!("not a valid run record: {e}"),
    })?;
    if record.schema > SCHEMA_VERSION {
        return Err(Error::Step {
            what: format!("reading run record {}", path.display()),
            detail: format!(
                "written by a newer stackback (schema {}; this build reads up to {SCHEMA_VERSION}): upgrade stackback",
                record.schema
            ),
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_and_parse_back() {
        let t = Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 5).unwrap();
        let id = RunId::from_time(t);
        assert_eq!(id.as_str(), "20260329_013005");
        assert_eq!(id.time(), t);
        assert!(RunId::try_from("2026-03-29".to_string()).is_err());
        assert_eq!(
            RunId::from_artifact_name("db_my_app_20260329_013005.sql.gz"),
            Some(id.clone())
        );
        assert_eq!(
            RunId::from_artifact_name("minio_b.x_20260329_013005.tar.gz"),
            Some(id.clone())
        );
        assert_eq!(RunId::from_artifact_name("notes.txt"), None);
    }

    #[test]
    fn edited_records_fail_their_checksum() {
        let mut r = RunRecord::new(RunId::from_time(Utc::now()), Utc::now());
        r.status = RunStatus::Ok;
        let json = r.to_json();
        let back: RunRecord = serde_json::from_slice(&json).unwrap();
        assert!(back.checksum_ok());
        let edited = String::from_utf8(json)
            .unwrap()
            .replace("\"ok\"", "\"failed\"");
        let back: RunRecord = serde_json::from_str(&edited).unwrap();
        assert!(!back.checksum_ok());
    }
}
