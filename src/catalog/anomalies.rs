//! The `anomalies` section of a run record: what changed beyond bounds against the recent good
//! runs when the run was checked. Written once by the run itself (`ops::backup`, from
//! [`crate::anomaly::judge`]); read by alerts, `list`, `status`, metrics, retention and the
//! status page. Acknowledgements are not kept here but in the state file
//! ([`super::state::AnomalyState`]): an acknowledgement is an operator's later decision, not a
//! fact of the run.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyMetric {
    /// The plain (uncompressed) size of a database dump, in bytes.
    DumpBytes,
    /// Rows in one table, counted in the dump's snapshot.
    TableRows,
    /// Objects in a bucket archive.
    BucketObjects,
    /// The plain size of a bucket archive (the objects and their tar headers), in bytes.
    BucketBytes,
    /// The plain size of a volume-mode archive, in bytes.
    VolumeBytes,
}

impl AnomalyMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyMetric::DumpBytes => "dump_bytes",
            AnomalyMetric::TableRows => "table_rows",
            AnomalyMetric::BucketObjects => "bucket_objects",
            AnomalyMetric::BucketBytes => "bucket_bytes",
            AnomalyMetric::VolumeBytes => "volume_bytes",
        }
    }

    /// What the subject is, for people: `table`, `bucket`...
    pub fn subject_kind(self) -> &'static str {
        match self {
            AnomalyMetric::DumpBytes => "database dump",
            AnomalyMetric::TableRows => "table",
            AnomalyMetric::BucketObjects | AnomalyMetric::BucketBytes => "bucket",
            AnomalyMetric::VolumeBytes => "volume",
        }
    }

    /// A value with its unit: `48000 rows`, `12.1 MiB`.
    pub fn value(self, v: u64) -> String {
        match self {
            AnomalyMetric::TableRows => format!("{v} rows"),
            AnomalyMetric::BucketObjects => format!("{v} objects"),
            _ => crate::units::human_bytes(v),
        }
    }
}

impl fmt::Display for AnomalyMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which bound was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyRule {
    /// More than BACKUP_ANOMALY_DROP below the median.
    Drop,
    /// More than BACKUP_ANOMALY_GROWTH above the median.
    Growth,
    /// A table that had rows now has none.
    Emptied,
    /// A table that had rows is not in the dump any more.
    Missing,
}

impl AnomalyRule {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyRule::Drop => "drop",
            AnomalyRule::Growth => "growth",
            AnomalyRule::Emptied => "emptied",
            AnomalyRule::Missing => "missing",
        }
    }
}

/// One value of a run beyond bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub metric: AnomalyMetric,
    /// The database, `schema.table`, bucket or volume the value belongs to.
    pub subject: String,
    /// The median of the value over the good runs compared with.
    pub before: u64,
    /// The value in this run.
    pub now: u64,
    /// `(now - before) / before` in percent, one decimal.
    pub change_percent: f64,
    pub rule: AnomalyRule,
    /// How many good runs the median was taken over.
    pub runs: u32,
}

impl Anomaly {
    /// `table public.orders: 120000 rows → 48000 rows (-60.0 %, median of 3 good runs)`.
    pub fn describe(&self) -> String {
        let what = match self.rule {
            AnomalyRule::Missing => "gone from the dump".to_string(),
            AnomalyRule::Emptied => "now empty".to_string(),
            AnomalyRule::Drop | AnomalyRule::Growth => {
                format!("{:+.1} %", self.change_percent)
            }
        };
        format!(
            "{} {}: {} → {} ({what}; before is the median of {} good {})",
            self.metric.subject_kind(),
            self.subject,
            self.metric.value(self.before),
            self.metric.value(self.now),
            self.runs,
            if self.runs == 1 { "run" } else { "runs" }
        )
    }
}
