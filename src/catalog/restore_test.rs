//! The `restore_test` section of a run record: what the last restore test of the run found.
//! Written by `ops::restore_test`, read by `list`, `status`, metrics and the status page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A table whose restored row count disagrees with the recorded one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowMismatch {
    /// `schema.table`.
    pub table: String,
    /// What the backup recorded (None: the table was not recorded).
    pub recorded: Option<u64>,
    /// What the scratch database holds (None: the table is missing there).
    pub restored: Option<u64>,
    /// Whether the recorded count was exact (else an estimate, compared with a tolerance).
    pub exact: bool,
}

/// The database part of a restore test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbTestResult {
    pub artifact: String,
    /// Tables and rows in the scratch database after the load.
    pub tables: u64,
    pub rows: u64,
    /// Tables compared with counts recorded at backup time (0 for runs recorded without them).
    pub compared: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<RowMismatch>,
}

/// An object that does not read back as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMismatch {
    pub key: String,
    /// What differs: `sha256`, `content_type`, `metadata`, `missing`.
    pub field: String,
    pub detail: String,
}

/// One bucket archive's part of a restore test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketTestResult {
    pub artifact: String,
    /// The bucket the archive was taken from.
    pub bucket: String,
    /// Objects in the archive.
    pub objects: u64,
    /// Objects uploaded to the scratch bucket and read back.
    pub sampled: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<ObjectMismatch>,
}

/// The `restore_test` section of a run record (schema 2 reserved it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTestRecord {
    pub ok: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Every object was restored (`--full`), not a sample.
    pub full: bool,
    /// The scratch PostgreSQL server, `host:port` (never credentials).
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DbTestResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<BucketTestResult>,
    /// Why the test failed, with a hint; secrets redacted.
    pub error: Option<String>,
}

impl RestoreTestRecord {
    /// One line: what was compared, or why it failed.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.database {
            parts.push(format!("{} tables, {} rows", d.tables, d.rows));
            if !d.mismatches.is_empty() {
                parts.push(format!("{} row counts differ", d.mismatches.len()));
            }
        }
        let sampled: u64 = self.buckets.iter().map(|b| b.sampled).sum();
        if !self.buckets.is_empty() {
            parts.push(format!("{sampled} objects read back"));
        }
        let bad: usize = self.buckets.iter().map(|b| b.mismatches.len()).sum();
        if bad > 0 {
            parts.push(format!("{bad} objects differ"));
        }
        let mut s = parts.join(", ");
        if let Some(e) = &self.error {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(e);
        }
        s
    }
}
