//! Per-table row counts of a run's database artifact, taken in the dump's own snapshot, and the
//! one way in and out of them.
//!
//! Counts are kept in the run record's reserved `row_counts` section (docs/run-record.md). Every
//! reader and writer goes through [`recorded_tables`] and [`record_tables`]: when encryption is on
//! the counts move to an encrypted sidecar (they tell how big each table is), and only these two
//! functions will have to know.

use serde::{Deserialize, Serialize};

use super::record::{ArtifactRecord, RunRecord};

/// Rows in one table when the dump's snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub schema: String,
    pub name: String,
    pub rows: u64,
    /// True for `count(*)`; false for the planner's estimate (`pg_class.reltuples`), used for
    /// tables larger than BACKUP_ROW_COUNT_EXACT_LIMIT.
    pub exact: bool,
}

impl TableCount {
    /// `schema.name` as people read it (not quoted for SQL).
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// The `row_counts` section of a run record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    /// The database artifact the counts belong to.
    pub file: String,
    /// Tables whose heap was at most this large were counted exactly.
    pub exact_limit_bytes: u64,
    pub tables: Vec<TableCount>,
}

/// The row counts recorded for `artifact` of `record`, when the run took them.
pub fn recorded_tables<'a>(
    record: &'a RunRecord,
    artifact: &ArtifactRecord,
) -> Option<&'a [TableCount]> {
    record
        .row_counts
        .as_ref()
        .filter(|c| c.file == artifact.file)
        .map(|c| c.tables.as_slice())
}

/// Records the row counts of the database artifact named `file`.
pub fn record_tables(
    record: &mut RunRecord,
    file: &str,
    exact_limit_bytes: u64,
    tables: Vec<TableCount>,
) {
    record.row_counts = Some(RowCounts {
        file: file.to_string(),
        exact_limit_bytes,
        tables,
    });
}
