//! Restores: a database dump back into PostgreSQL ([`db`]), a bucket archive back into any
//! S3-compatible server ([`objects`]), a volume archive into a directory ([`volume`]), and a whole
//! run ([`restore_run`]).
//!
//! Every restore first proves the artifact: its SHA-256 must equal the run record's (and the object
//! index's too), so a damaged backup is refused before anything is written.

pub mod db;
pub mod objects;
pub mod volume;

use std::path::Path;

use crate::catalog::{ArtifactKind, ArtifactRecord, Catalog};
use crate::config::Config;
use crate::error::{Checksum, Error, Problem, Result};
use crate::ops::Selector;
use crate::pipeline::hash_file;
use crate::sink::local::BackupDir;

pub use db::{DbRestoreOptions, DbRestoreReport};
pub use objects::{Existing, ObjectRestoreOptions, ObjectRestoreReport};
pub use volume::VolumeRestoreReport;

/// Checks the stored SHA-256 of an artifact against the run record. Blocking. (A bucket archive's
/// index sidecar is checked by the object restore, which falls back to the archive's own index.)
pub fn check_stored(dir: &Path, a: &ArtifactRecord) -> Result<()> {
    let path = dir.join(&a.file);
    let (_, got) = hash_file(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    if got != a.stored_sha256 {
        return Err(Error::verification(
            format!("{} (refusing to restore a damaged backup)", a.file),
            Problem::ChecksumMismatch {
                what: Checksum::Stored,
                actual: got,
                recorded: a.stored_sha256.clone(),
            },
        ));
    }
    Ok(())
}

/// The verified artifacts of `kind` that `sel` names, each proven against its checksum.
pub(crate) async fn proven(
    dir: &BackupDir,
    kind: ArtifactKind,
    sel: &Selector,
) -> Result<Vec<ArtifactRecord>> {
    let (_, arts) = sel.artifacts(&Catalog::new(dir.clone()), kind)?;
    let (d, to_check) = (dir.path().to_path_buf(), arts.clone());
    crate::ops::blocking("checking the backup", move || {
        to_check.iter().try_for_each(|a| check_stored(&d, a))
    })
    .await?;
    Ok(arts)
}

/// What `restore run` did.
#[derive(Debug, Clone)]
pub struct RunRestoreReport {
    pub db: DbRestoreReport,
    /// Empty when the run holds no bucket backup.
    pub objects: Vec<ObjectRestoreReport>,
}

/// The database, then the buckets, of one run (`latest` is pinned first, so both come from the
/// same run).
pub async fn restore_run(
    cfg: &Config,
    sel: &Selector,
    db_opts: &DbRestoreOptions,
    existing: Existing,
    create_bucket: bool,
) -> Result<RunRestoreReport> {
    if matches!(sel, Selector::File(_)) {
        return Err(Error::Usage(
            "restore run takes a run id or `latest`, not a file".into(),
        ));
    }
    let catalog = Catalog::new(BackupDir::open(&cfg.backup_dir())?);
    let sel = sel.pin(&catalog, ArtifactKind::Database)?;
    let has_buckets = match &sel {
        Selector::Run(id) => catalog
            .load(id)?
            .good_artifacts(ArtifactKind::Objects)
            .next()
            .is_some(),
        _ => unreachable!("pinned to a run above"),
    };
    let db = db::restore_db(cfg, &sel, db_opts).await?;
    let opts = ObjectRestoreOptions {
        bucket: None,
        endpoint: None,
        prefix: None,
        existing,
        create_bucket,
        verify: true,
    };
    let objects = if has_buckets {
        objects::restore_objects(cfg, &sel, &opts).await?
    } else {
        Vec::new()
    };
    Ok(RunRestoreReport { db, objects })
}
