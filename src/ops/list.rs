//! Naming of artifacts in the backup directory, shared by listing, verification and retention.

use crate::catalog::{ArtifactKind, RunId};

/// The kind of artifact a file name looks like, whoever wrote it (stackback or the seed's script):
/// `db_<db>_<id>.sql[.gz|.zst]`, `globals_<db>_<id>.sql[...]`, `minio_<name>_<id>.tar[...]`.
pub fn artifact_kind_of(name: &str) -> Option<ArtifactKind> {
    RunId::from_artifact_name(name)?;
    let is_sql = [".sql", ".sql.gz", ".sql.zst"]
        .iter()
        .any(|s| name.ends_with(s));
    let is_tar = [".tar", ".tar.gz", ".tar.zst"]
        .iter()
        .any(|s| name.ends_with(s));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_names_are_recognised() {
        assert_eq!(
            artifact_kind_of("db_schedgen_20260101_020000.sql.gz"),
            Some(ArtifactKind::Database)
        );
        assert_eq!(
            artifact_kind_of("minio_schedgen-pdfs_20260101_020000.tar.gz"),
            Some(ArtifactKind::Objects)
        );
        assert_eq!(
            artifact_kind_of("db_x_20260101_020000.sql.zst"),
            Some(ArtifactKind::Database)
        );
        assert_eq!(artifact_kind_of("run_20260101_020000.json"), None);
        assert_eq!(artifact_kind_of("db_notes.txt"), None);
    }
}
