//! The run record: everything stackback knows about one backup run, `run_<id>.json`.
//!
//! A run writes its record twice: at the start with state `running` (a crash leaves a record that
//! says the run never finished, so its leftovers stay attributable), and at the end with `ok`,
//! `partial` or `failed`, after every artifact was written and verified.
//!
//! Integrity: each record carries `record_sha256`, a SHA-256 of its own JSON with that field
//! removed, so an edited record is detected rather than trusted. From schema 2 the sum is taken
//! over the raw JSON as read (objects with sorted keys), so fields this build does not know, which a
//! later build may add, are kept when a record is rewritten and never make it look modified.
//! Schema-1 records keep their original sum (this struct's own serialisation). Format:
//! docs/run-record.md.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use super::naming::{ArtifactKind, RunId};
use crate::error::RecordError;
use crate::pipeline::{Compression, PlainAlgo, PlainSum};

/// Version of the run-record schema this build writes. Schema 3 keeps the plain side's BLAKE3
/// (`plain_blake3`) where 1-2 kept its SHA-256 (`plain_sha256`).
pub const SCHEMA_VERSION: u32 = 3;

/// The state of a run: what its record says, and what `list` makes of it.
///
/// A record itself only ever holds `running`, `ok`, `partial` or `failed`; `incomplete` (a record
/// still `running` while no process holds the directory lock: the run was killed) and `unreadable`
/// (a record that cannot be parsed, or whose self-checksum fails) are how readers see records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    /// Every artifact written and verified: the only state whose artifacts count as backups for
    /// retention and `latest`.
    Ok,
    /// The database artifact is good, a later step failed. Alerted as a failure.
    Partial,
    Failed,
    Incomplete,
    Unreadable,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Ok => "ok",
            RunState::Partial => "partial",
            RunState::Failed => "failed",
            RunState::Incomplete => "incomplete",
            RunState::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: tables align on the state's width.
        f.pad(self.as_str())
    }
}

/// A step of a run, as recorded in `failed_step`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Before a run record existed: configuration, directory, lock.
    Start,
    Preflight,
    Database,
    Globals,
    /// Volume mode: the data directory.
    Volume,
    /// One bucket, by name.
    Objects(String),
    Verify,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Start => f.write_str("start"),
            Step::Preflight => f.write_str("preflight"),
            Step::Database => f.write_str("database"),
            Step::Globals => f.write_str("globals"),
            Step::Volume => f.write_str("volume"),
            Step::Objects(b) => write!(f, "objects:{b}"),
            Step::Verify => f.write_str("verify"),
        }
    }
}

impl FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Step, String> {
        Ok(match s {
            "start" => Step::Start,
            "preflight" => Step::Preflight,
            "database" => Step::Database,
            "globals" => Step::Globals,
            "volume" => Step::Volume,
            "verify" => Step::Verify,
            other => match other.strip_prefix("objects:") {
                Some(b) => Step::Objects(b.to_string()),
                None => return Err(format!("unknown step {other:?}")),
            },
        })
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The result of checking one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub ok: bool,
    pub checked_at: DateTime<Utc>,
    pub detail: String,
    /// How deep the check went; records before encryption existed were always checked in full.
    #[serde(default)]
    pub level: VerifyLevel,
}

/// How deep a verification went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyLevel {
    /// Decrypted (when sealed), decompressed, and the content checked to its end.
    #[default]
    Full,
    /// A sealed file checked without its identity: size, SHA-256 of the ciphertext and the age
    /// header (the content was checked in the stream while it was written).
    Stored,
}

impl std::fmt::Display for VerifyLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            VerifyLevel::Full => "full",
            VerifyLevel::Stored => "stored",
        })
    }
}

/// How an artifact is encrypted at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encryption {
    /// The age v1 format (`age -d -i KEY FILE` opens it).
    Age,
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
    /// BLAKE3 of the stored file: what a restore proves it by before touching anything. Runs
    /// before it existed do not keep it (their files are proven by `stored_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_blake3: Option<String>,
    pub plain_bytes: u64,
    /// BLAKE3 of the decompressed stream (schema 3 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_blake3: Option<String>,
    /// SHA-256 of the decompressed stream (schema 1-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_sha256: Option<String>,
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
    /// SHA-256 of a sealed index file as stored (ciphertext); `index_sha256` is its plain content's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_stored_sha256: Option<String>,
    /// Set when the file (and its index) are sealed: `stored_sha256` is then the ciphertext's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Objects listed but gone before they could be fetched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    pub verification: Verification,
}

impl ArtifactRecord {
    pub fn sealed(&self) -> bool {
        self.encryption.is_some()
    }

    /// The files this artifact occupies in the backup directory: the archive and its index.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.file.as_str()).chain(self.index_file.as_deref())
    }

    /// The plain side's checksum: BLAKE3 where the record keeps one, else SHA-256 (schema 1-2).
    pub fn plain_sum(&self) -> Option<PlainSum> {
        let sum = |algo, hex: &String| PlainSum {
            algo,
            hex: hex.clone(),
        };
        (self
            .plain_blake3
            .as_ref()
            .map(|h| sum(PlainAlgo::Blake3, h)))
        .or_else(|| {
            self.plain_sha256
                .as_ref()
                .map(|h| sum(PlainAlgo::Sha256, h))
        })
    }
}

/// What the automatic prune at the end of a good run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneSummary {
    pub deleted_runs: Vec<RunId>,
    pub freed_bytes: u64,
    /// Set when pruning failed; the backup itself is still good.
    pub error: Option<String>,
}

/// Free space was short of the previous run's size when the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowSpace {
    pub free_bytes: u64,
    pub previous_bytes: u64,
}

/// Everything known about one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: u32,
    pub run_id: RunId,
    /// The run's place in the directory's history (the highest seen + 1): what `latest` and
    /// retention order runs by, since clocks jump. Records without one come first, by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    pub status: RunState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The step that failed.
    pub failed_step: Option<Step>,
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
    /// Set when the run started short of space (schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_space: Option<LowSpace>,
    /// Per-table row counts of the database artifact, in the dump's snapshot. Read and written
    /// only through [`super::recorded_tables`] and [`super::record_tables`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) row_counts: Option<super::RowCounts>,
    /// The last restore test of this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<super::RestoreTestRecord>,
    /// Values beyond bounds against the recent good runs (`crate::anomaly`): absent when the run
    /// was not compared (not ok, too few earlier good runs, checks off), empty when every value
    /// was within bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<Vec<super::Anomaly>>,
    /// Fields this build does not know (reserved sections of schema 2 filled by a later build):
    /// kept as they are when the record is rewritten.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// SHA-256 of this record's JSON without this field.
    #[serde(default)]
    pub record_sha256: String,
    /// Whether the record's self-checksum matched when it was read; true for records built here.
    #[serde(skip, default = "yes")]
    checksum_matched: bool,
}

fn yes() -> bool {
    true
}

impl RunRecord {
    pub fn new(run_id: RunId, started_at: DateTime<Utc>) -> Self {
        RunRecord {
            schema: SCHEMA_VERSION,
            run_id,
            sequence: None,
            status: RunState::Running,
            started_at,
            finished_at: None,
            failed_step: None,
            error: None,
            warnings: Vec::new(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            host: super::host_name(),
            pg_dump_version: None,
            server_version: None,
            artifacts: Vec::new(),
            prune: None,
            low_space: None,
            row_counts: None,
            restore_test: None,
            anomalies: None,
            extra: serde_json::Map::new(),
            record_sha256: String::new(),
            checksum_matched: true,
        }
    }

    pub fn file_name(&self) -> String {
        self.run_id.record_file()
    }

    /// The order of runs in the directory's history: the sequence, then the id.
    pub fn order(&self) -> (u64, &RunId) {
        (self.sequence.unwrap_or(0), &self.run_id)
    }

    /// True for ok and partial runs: they hold at least one verified artifact.
    pub fn has_good_artifacts(&self) -> bool {
        matches!(self.status, RunState::Ok | RunState::Partial)
    }

    /// The artifacts of a kind that passed verification in a finished run.
    pub fn good_artifacts(&self, kind: ArtifactKind) -> impl Iterator<Item = &ArtifactRecord> {
        let good = self.has_good_artifacts();
        self.artifacts
            .iter()
            .filter(move |a| good && a.kind == kind && a.verification.ok)
    }

    /// Every file the record names: its artifacts and their indexes.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.artifacts.iter().flat_map(ArtifactRecord::files)
    }

    /// True when the stored self-checksum matched the content when this record was read.
    pub fn checksum_ok(&self) -> bool {
        self.checksum_matched
    }

    /// Serialises with a fresh self-checksum (schema 2 on: over the JSON with sorted keys). The file
    /// keeps the struct's field order, for people reading it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut copy = self.clone();
        copy.record_sha256 = if self.schema >= 2 {
            let mut value = serde_json::to_value(self).expect("a run record always serialises");
            value
                .as_object_mut()
                .expect("a record is an object")
                .remove("record_sha256");
            canonical_sha256(&value)
        } else {
            self.v1_sha256()
        };
        let mut out = serde_json::to_vec_pretty(&copy).expect("a run record always serialises");
        out.push(b'\n');
        out
    }

    /// Parses a record and checks its self-checksum.
    pub fn from_json(bytes: &[u8]) -> Result<RunRecord, RecordError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Invalid(e.to_string()))?;
        let schema = value
            .get("schema")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| RecordError::Invalid("missing field `schema`".into()))?;
        if schema > u64::from(SCHEMA_VERSION) {
            return Err(RecordError::TooNew {
                found: schema as u32,
                supported: SCHEMA_VERSION,
            });
        }
        let mut record: RunRecord = serde_json::from_value(value.clone())
            .map_err(|e| RecordError::Invalid(e.to_string()))?;
        // Names are acted on (verified, restored, deleted): only plain file names of this
        // directory, never a path, are taken from a record.
        if let Some(bad) = record.files().find(|f| !super::naming::is_artifact_file(f)) {
            return Err(RecordError::Invalid(format!(
                "it names {bad:?}, which is not an artifact file name of the backup directory"
            )));
        }
        // Schema 3 keeps BLAKE3, schemas 1-2 SHA-256: a record holding the other kind was not
        // written by any build.
        let (field, has): (&str, fn(&ArtifactRecord) -> bool) = if schema >= 3 {
            ("plain_blake3", |a| a.plain_blake3.is_some())
        } else {
            ("plain_sha256", |a| a.plain_sha256.is_some())
        };
        if let Some(a) = record.artifacts.iter().find(|a| !has(a)) {
            return Err(RecordError::Invalid(format!(
                "artifact {:?} has no {field}, which records of schema {schema} keep",
                a.file
            )));
        }
        record.checksum_matched = if schema >= 2 {
            value
                .as_object_mut()
                .expect("parsed as a record")
                .remove("record_sha256");
            record.record_sha256 == canonical_sha256(&value)
        } else {
            record.record_sha256 == record.v1_sha256()
        };
        Ok(record)
    }

    /// Schema 1's sum: this struct's compact serialisation with the sum field empty.
    fn v1_sha256(&self) -> String {
        let mut copy = self.clone();
        copy.record_sha256.clear();
        let bytes = serde_json::to_vec(&copy).expect("a run record always serialises");
        hex::encode(Sha256::digest(&bytes))
    }
}

/// SHA-256 of a JSON value written with every object's keys sorted and no whitespace: the same
/// bytes whatever order the keys were read or written in.
fn canonical_sha256(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) {
        match v {
            serde_json::Value::Object(m) => {
                out.push(b'{');
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k).expect("strings serialise");
                    out.push(b':');
                    write(&m[k], out);
                }
                out.push(b'}');
            }
            serde_json::Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out);
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialise"),
        }
    }
    let mut bytes = Vec::new();
    write(v, &mut bytes);
    hex::encode(Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RunRecord {
        let mut r = RunRecord::new(RunId::from_time(Utc::now()), Utc::now());
        r.status = RunState::Ok;
        r.failed_step = Some(Step::Objects("pdfs".into()));
        r
    }

    #[test]
    fn edited_records_fail_their_checksum() {
        let json = record().to_json();
        assert!(RunRecord::from_json(&json).unwrap().checksum_ok());
        let edited = String::from_utf8(json)
            .unwrap()
            .replace("\"ok\"", "\"failed\"");
        assert!(!RunRecord::from_json(edited.as_bytes())
            .unwrap()
            .checksum_ok());
    }

    #[test]
    fn fields_of_a_later_build_are_kept_and_do_not_look_modified() {
        // A later build adds sections this one does not know, and signs the whole record.
        let mut v: serde_json::Value = serde_json::from_slice(&record().to_json()).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("record_sha256");
        o.insert(
            "encryption".into(),
            serde_json::json!({"recipients": ["age1x"], "rows": 12}),
        );
        o.insert("replicas".into(), serde_json::json!([{"target": "orders"}]));
        let sum = canonical_sha256(&v);
        v["record_sha256"] = serde_json::Value::String(sum);
        // Key order in the file does not matter either.
        let text = serde_json::to_vec_pretty(&v).unwrap();
        let read = RunRecord::from_json(&text).unwrap();
        assert!(read.checksum_ok());
        assert_eq!(read.extra["encryption"]["rows"], 12);
        // Rewritten by this build, the unknown sections survive and the sum still holds.
        let again = RunRecord::from_json(&read.to_json()).unwrap();
        assert!(again.checksum_ok());
        assert_eq!(again.extra["replicas"][0]["target"], "orders");
    }

    #[test]
    fn anomalies_round_trip_under_the_checksum() {
        use crate::catalog::{Anomaly, AnomalyMetric, AnomalyRule};
        let mut r = record();
        r.anomalies = Some(vec![Anomaly {
            metric: AnomalyMetric::TableRows,
            subject: "public.orders".into(),
            before: 120_000,
            now: 48_000,
            change_percent: -60.0,
            rule: AnomalyRule::Drop,
            runs: 3,
        }]);
        let json = r.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(r#""metric": "table_rows""#), "{text}");
        let back = RunRecord::from_json(&json).unwrap();
        assert!(back.checksum_ok());
        assert_eq!(back.anomalies, r.anomalies);
        // Checked and within bounds is an empty list, not an absent one.
        r.anomalies = Some(Vec::new());
        let text = String::from_utf8(r.to_json()).unwrap();
        assert!(text.contains(r#""anomalies": []"#), "{text}");
    }

    #[test]
    fn schema_one_records_keep_their_sum() {
        let mut r = record();
        r.schema = 1;
        let json = r.to_json();
        let back = RunRecord::from_json(&json).unwrap();
        assert!(back.checksum_ok());
        assert_eq!(back.schema, 1);
    }

    #[test]
    fn newer_schemas_are_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&record().to_json()).unwrap();
        v["schema"] = 4.into();
        let err = RunRecord::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert_eq!(
            err,
            RecordError::TooNew {
                found: 4,
                supported: SCHEMA_VERSION
            }
        );
    }

    #[test]
    fn steps_round_trip_as_text() {
        for s in [
            "start",
            "preflight",
            "database",
            "globals",
            "volume",
            "verify",
            "objects:a:b",
        ] {
            assert_eq!(s.parse::<Step>().unwrap().to_string(), s);
        }
        assert!("nope".parse::<Step>().is_err());
    }
}
