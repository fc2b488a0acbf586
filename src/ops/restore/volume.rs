//! Volume archives (`MINIO_DATA_DIR` backups) extracted into a directory, never outside it.

use std::path::{Path, PathBuf};

use crate::catalog::{ArtifactKind, ArtifactRecord};
use crate::config::Config;
use crate::error::{Error, Problem, Result};
use crate::ops::Selector;
use crate::sink::local::BackupDir;

#[derive(Debug, Clone)]
pub struct VolumeRestoreReport {
    pub artifact: String,
    pub into: PathBuf,
    pub entries: u64,
}

/// Extracts a volume archive into `into` (never outside it). Refuses a non-empty `into` unless
/// `force`.
pub async fn restore_volume(
    cfg: &Config,
    sel: &Selector,
    into: &Path,
    force: bool,
) -> Result<VolumeRestoreReport> {
    let dir = BackupDir::open(&cfg.backup_dir())?;
    let catalog = crate::catalog::Catalog::new(dir.clone());
    if sel.artifacts(&catalog, ArtifactKind::Volume).is_err() {
        if let Ok((run, arts)) = sel.artifacts(&catalog, ArtifactKind::Objects) {
            return Err(Error::Usage(format!(
                "run {} holds bucket archives made through the S3 API ({}), not a volume: restore them with `stackback restore objects`; `restore volume`, like the seed's `tar xzf ... -C /data`, only fits archives of MINIO_DATA_DIR",
                run.run_id,
                arts.iter().map(|a| a.file.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    prepare_target(into, force)?;
    let (a, stored) = super::proven(cfg, &dir, ArtifactKind::Volume, sel)
        .await?
        .into_iter()
        .next()
        .expect("a selection holds at least one artifact");
    let (dir, into) = (dir.path().to_path_buf(), into.to_path_buf());
    crate::ops::blocking("extracting", move || extract(&dir, &a, &stored, &into)).await
}

fn prepare_target(into: &Path, force: bool) -> Result<()> {
    if !into.exists() {
        return std::fs::create_dir_all(into).map_err(|e| Error::io("cannot create", into, e));
    }
    let non_empty = std::fs::read_dir(into)
        .map_err(|e| Error::io("cannot read", into, e))?
        .next()
        .is_some();
    if non_empty && !force {
        return Err(Error::Usage(format!(
            "{} is not empty: add --force to extract over its contents",
            into.display()
        )));
    }
    Ok(())
}

fn extract(
    dir: &Path,
    a: &ArtifactRecord,
    stored: &super::Stored,
    into: &Path,
) -> Result<VolumeRestoreReport> {
    let path = dir.join(&a.file);
    let plain = stored.open(&path)?;
    let mut tar = tar::Archive::new(plain);
    tar.set_preserve_permissions(true);
    // Ownership is not restored, so neither are setuid and setgid: a root-owned setuid copy of
    // a file from the backup would be a gift to whoever wrote it.
    tar.set_mask(0o6000);
    tar.set_overwrite(true);
    let mut entries = 0u64;
    for entry in tar
        .entries()
        .map_err(|e| Error::io("cannot read", &path, e))?
    {
        let mut entry = entry.map_err(|e| Error::io("cannot read", &path, e))?;
        // unpack_in refuses absolute paths, `..` and writes through symlinks that leave `into`.
        let inside = entry
            .unpack_in(into)
            .map_err(|e| Error::io("cannot extract into", into, e))?;
        if !inside {
            return Err(Error::verification(&a.file, Problem::OutsideTarget));
        }
        entries += 1;
    }
    Ok(VolumeRestoreReport {
        artifact: a.file.clone(),
        into: into.to_path_buf(),
        entries,
    })
}
