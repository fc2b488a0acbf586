//! What can be wrong with a backup: one enum, rendered to text in one place.
//!
//! Every check that proves an artifact (right after writing it, `verify`, before a restore, while a
//! restore reads it) reports a [`Problem`], in the manner of pgBackRest's verify results. Callers
//! decide on the variant; people read the [`Display`](std::fmt::Display) text, which is also what
//! a run record keeps in its verification detail.

use std::fmt;

/// Which checksum disagreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The file as stored on disk (compressed).
    Stored,
    /// The object index of a bucket archive.
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file (or its object index) is not there.
    Missing { what: String },
    /// The file is there but cannot be opened or read.
    Unreadable { what: String, detail: String },
    /// Its size differs from the run record's.
    SizeMismatch { actual: u64, recorded: u64 },
    /// At most the configured minimum for its kind.
    TooSmall {
        size: u64,
        min: u64,
        /// The artifact kind, as people read it (`database`).
        kind: String,
    },
    /// The stream does not decompress, or the archive does not parse.
    Undecodable { detail: String },
    /// A checksum of stored bytes differs from the one recorded.
    ChecksumMismatch {
        what: Checksum,
        actual: String,
        recorded: String,
    },
    /// The decompressed content differs from the run record.
    PlainMismatch { bytes: u64, sum: String },
    /// A plain dump lacks its completion line: pg_dump did not finish.
    IncompleteDump { marker: &'static str },
    /// A bucket archive disagrees with its object index (order, sizes, checksums, count).
    IndexMismatch { detail: String },
    /// A restored object reads back differently from the index (boxed: the largest variant).
    ReadBack(Box<ReadBack>),
    /// An archive entry would land outside the restore target.
    OutsideTarget,
    /// `latest` was asked for, and no run succeeded.
    NoGoodRun { dir: String },
    /// No run record names the file, so nothing proves it complete.
    Unrecorded { dir: String },
    /// The run record was edited after stackback wrote it.
    RecordModified,
    /// The run record cannot be parsed.
    RecordUnusable { detail: String },
    /// A restore test: the dump did not load into an empty scratch database.
    RestoreLoad { detail: String },
    /// A restore test: restored tables do not hold the rows recorded at backup time.
    RowCounts { tables: usize, detail: String },
    /// A restore test: objects do not read back as the index describes them.
    ObjectsDiffer {
        bucket: String,
        objects: usize,
        detail: String,
    },
}

/// How a restored object read back, against its index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub key: String,
    pub bucket: String,
    /// `"blake3"` or `"sha256"`: the sum the index entry is checked by.
    pub algorithm: &'static str,
    pub actual: String,
    pub recorded: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { what } => write!(f, "missing: {what} does not exist"),
            Problem::Unreadable { what, detail } => write!(f, "cannot read {what}: {detail}"),
            Problem::SizeMismatch { actual, recorded } => write!(
                f,
                "size is {actual} bytes, the run record says {recorded} (truncated or replaced)"
            ),
            Problem::TooSmall { size, min, kind } => write!(
                f,
                "only {size} bytes, at most the {min}-byte minimum for a {kind} backup (lower the threshold for a tiny {kind} if this is expected)"
            ),
            Problem::Undecodable { detail } => f.write_str(detail),
            Problem::ChecksumMismatch {
                what: Checksum::Stored,
                actual,
                recorded,
            } => write!(
                f,
                "sha256 of the file is {actual}, the run record says {recorded}"
            ),
            Problem::ChecksumMismatch {
                what: Checksum::Index,
                actual,
                recorded,
            } => write!(
                f,
                "object index sha256 is {actual}, the run record says {recorded}"
            ),
            Problem::PlainMismatch { bytes, sum } => write!(
                f,
                "decompressed content differs from the run record ({bytes} bytes, {sum})"
            ),
            Problem::IncompleteDump { marker } => write!(
                f,
                "the dump does not end with {marker:?}: pg_dump did not finish writing it"
            ),
            Problem::IndexMismatch { detail } => f.write_str(detail),
            Problem::ReadBack(r) => write!(
                f,
                "object {:?} in bucket {} reads back with {} {}, expected {}",
                r.key, r.bucket, r.algorithm, r.actual, r.recorded
            ),
            Problem::OutsideTarget => f.write_str(
                "holds an entry that points outside the target directory; refusing it",
            ),
            Problem::NoGoodRun { dir } => {
                write!(f, "no successful run recorded in {dir}: nothing to verify")
            }
            Problem::Unrecorded { dir } => write!(
                f,
                "no run record in {dir} names this file, so nothing proves it complete (a file of another tool, or its run record is missing)"
            ),
            Problem::RecordModified => f.write_str(
                "run record was modified after stackback wrote it (its self-checksum does not match): its artifacts cannot be trusted",
            ),
            Problem::RecordUnusable { detail } => write!(f, "run record unusable: {detail}"),
            Problem::RestoreLoad { detail } => write!(
                f,
                "the dump does not load into an empty database: {detail}"
            ),
            Problem::RowCounts { tables, detail } => write!(
                f,
                "row counts of {tables} restored table(s) differ from the ones recorded at backup time: {detail}"
            ),
            Problem::ObjectsDiffer {
                bucket,
                objects,
                detail,
            } => write!(
                f,
                "{objects} object(s) of bucket {bucket} do not read back as the index describes them: {detail}"
            ),
        }
    }
}

impl Problem {
    pub fn index(detail: impl Into<String>) -> Problem {
        Problem::IndexMismatch {
            detail: detail.into(),
        }
    }

    pub fn undecodable(detail: impl Into<String>) -> Problem {
        Problem::Undecodable {
            detail: detail.into(),
        }
    }
}
