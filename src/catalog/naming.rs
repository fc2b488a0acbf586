//! Names: run ids and the file names of artifacts, run records and their sidecars.
//!
//! A run id is the run's start time in UTC, `YYYYMMDD_HHMMSS`. Artifacts are named as the seed's
//! script named them, `<prefix>_<source>_<id><content><compression>`:
//! `db_<db>_<id>.sql.gz`, `globals_<db>_<id>.sql.gz`, `minio_<bucket>_<id>.tar.gz`; a bucket
//! archive's object index sits beside it as `minio_<bucket>_<id>.index.jsonl`.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::pipeline::Compression;

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

    /// The run record's file name, `run_<id>.json`.
    pub fn record_file(&self) -> String {
        format!("run_{self}.json")
    }

    /// The id in a run record's file name.
    pub fn from_record_file(name: &str) -> Option<RunId> {
        name.strip_prefix("run_")
            .and_then(|s| s.strip_suffix(".json"))
            .and_then(|s| RunId::try_from(s.to_string()).ok())
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
        f.pad(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl ArtifactKind {
    /// The file name prefix, as the seed's script wrote it.
    pub fn prefix(self) -> &'static str {
        match self {
            ArtifactKind::Database => "db",
            ArtifactKind::Globals => "globals",
            ArtifactKind::Objects | ArtifactKind::Volume => "minio",
        }
    }

    /// The content suffix before the compression's.
    pub fn content_suffix(self) -> &'static str {
        match self {
            ArtifactKind::Database | ArtifactKind::Globals => ".sql",
            ArtifactKind::Objects | ArtifactKind::Volume => ".tar",
        }
    }

    /// `db_<source>_<id>.sql.gz` and the like; sealed files end with `.age`.
    pub fn file_name(
        self,
        source: &str,
        run: &RunId,
        compression: Compression,
        sealed: bool,
    ) -> String {
        format!(
            "{}_{source}_{run}{}{}{}",
            self.prefix(),
            self.content_suffix(),
            compression.extension(),
            if sealed { crate::crypt::SUFFIX } else { "" }
        )
    }

    /// The kind a file name looks like, whoever wrote it (stackback or the seed's script). Bucket
    /// and volume archives share a name pattern: both come back as [`ArtifactKind::Objects`].
    pub fn of_file_name(name: &str) -> Option<ArtifactKind> {
        RunId::from_artifact_name(name)?;
        let name = name.strip_suffix(crate::crypt::SUFFIX).unwrap_or(name);
        let ends = |sfx: &[&str]| sfx.iter().any(|s| name.ends_with(s));
        let is_sql = ends(&[".sql", ".sql.gz", ".sql.zst"]);
        let is_tar = ends(&[".tar", ".tar.gz", ".tar.zst"]);
        if name.starts_with("db_") && is_sql {
            Some(ArtifactKind::Database)
        } else if name.starts_with("globals_") && is_sql {
            Some(ArtifactKind::Globals)
        } else if name.starts_with("minio_") && is_tar {
            Some(ArtifactKind::Objects)
        } else {
            None
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ArtifactKind::Database => "database",
            ArtifactKind::Globals => "globals",
            ArtifactKind::Objects => "objects",
            ArtifactKind::Volume => "volume",
        })
    }
}

/// True when `name` is a plain file name of an artifact or of an object index: no directory part,
/// not hidden, and named as stackback names them. Names read from records are checked with this
/// before anything is opened or deleted.
pub fn is_artifact_file(name: &str) -> bool {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control);
    plain
        && (ArtifactKind::of_file_name(name).is_some()
            || (name.starts_with("minio_")
                && name
                    .strip_suffix(crate::crypt::SUFFIX)
                    .unwrap_or(name)
                    .strip_suffix(".index.jsonl")
                    .is_some_and(|stem| RunId::from_artifact_name(stem).is_some())))
}

/// True when `name` is an artifact or index file of `run`: what a record read off a remote may
/// name for deletion.
pub fn is_artifact_of(name: &str, run: &RunId) -> bool {
    is_artifact_file(name) && RunId::from_artifact_name(name).as_ref() == Some(run)
}

/// True for a sealed file's name (`.age`).
pub fn is_sealed_name(name: &str) -> bool {
    name.ends_with(crate::crypt::SUFFIX)
}

/// The sidecar index file of an archive: `minio_b_<id>.tar.gz` → `minio_b_<id>.index.jsonl`, and
/// a sealed archive's index is sealed too: `….tar.gz.age` → `….index.jsonl.age`.
pub fn index_file_name(archive: &str) -> String {
    let (plain, seal) = match archive.strip_suffix(crate::crypt::SUFFIX) {
        Some(p) => (p, crate::crypt::SUFFIX),
        None => (archive, ""),
    };
    let stem = [".tar.gz", ".tar.zst", ".tar"]
        .iter()
        .find_map(|suffix| plain.strip_suffix(suffix))
        .unwrap_or(plain);
    format!("{stem}.index.jsonl{seal}")
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
        assert_eq!(RunId::from_record_file(&id.record_file()), Some(id));
    }

    #[test]
    fn seed_names_are_recognised() {
        let k = ArtifactKind::of_file_name;
        assert_eq!(
            k("db_schedgen_20260101_020000.sql.gz"),
            Some(ArtifactKind::Database)
        );
        assert_eq!(
            k("minio_schedgen-pdfs_20260101_020000.tar.gz"),
            Some(ArtifactKind::Objects)
        );
        assert_eq!(
            k("db_x_20260101_020000.sql.zst"),
            Some(ArtifactKind::Database)
        );
        assert_eq!(k("run_20260101_020000.json"), None);
        assert_eq!(k("db_notes.txt"), None);
        let id = RunId::try_from("20260101_020000".to_string()).unwrap();
        assert_eq!(
            ArtifactKind::Database.file_name("app", &id, Compression::Gzip, false),
            "db_app_20260101_020000.sql.gz"
        );
    }

    #[test]
    fn only_plain_artifact_names_pass() {
        for ok in [
            "db_app_20260101_020000.sql.gz",
            "minio_b_20260101_020000.tar.zst",
            "minio_b_20260101_020000.index.jsonl",
            "globals_app_20260101_020000.sql",
        ] {
            assert!(is_artifact_file(ok), "{ok}");
        }
        for bad in [
            "../db_app_20260101_020000.sql.gz",
            "/etc/db_app_20260101_020000.sql.gz",
            "sub/db_app_20260101_020000.sql.gz",
            ".stackback-tmp.db_app_20260101_020000.sql.gz",
            "run_20260101_020000.json",
            "passwd",
            "",
        ] {
            assert!(!is_artifact_file(bad), "{bad}");
        }
    }

    #[test]
    fn sealed_names() {
        let id = RunId::try_from("20260101_020000".to_string()).unwrap();
        let db = ArtifactKind::Database.file_name("app", &id, Compression::Gzip, true);
        assert_eq!(db, "db_app_20260101_020000.sql.gz.age");
        assert_eq!(
            ArtifactKind::of_file_name(&db),
            Some(ArtifactKind::Database)
        );
        assert_eq!(RunId::from_artifact_name(&db), Some(id.clone()));
        let tar = ArtifactKind::Objects.file_name("b", &id, Compression::Zstd, true);
        assert_eq!(
            ArtifactKind::of_file_name(&tar),
            Some(ArtifactKind::Objects)
        );
        let index = index_file_name(&tar);
        assert_eq!(index, "minio_b_20260101_020000.index.jsonl.age");
        assert!(is_artifact_file(&index) && is_artifact_file(&db));
        assert!(!is_artifact_file("db_app_20260101_020000.sql.gz.age/x"));
        assert!(ArtifactKind::of_file_name("db_app_20260101_020000.age").is_none());
    }

    #[test]
    fn sidecar_names() {
        assert_eq!(
            index_file_name("minio_b_20260101_000000.tar.gz"),
            "minio_b_20260101_000000.index.jsonl"
        );
        assert_eq!(
            index_file_name("minio_b.tar.c_20260101_000000.tar"),
            "minio_b.tar.c_20260101_000000.index.jsonl"
        );
    }
}
