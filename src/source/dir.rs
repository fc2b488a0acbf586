//! Volume mode: a directory (a MinIO data volume, as the seed's script did) tarred as it is.
//!
//! Since 2022 MinIO stores objects in its own on-disk format (`xl.meta`), so such an archive only
//! restores into the same MinIO version; bucket backups through the S3 API do not have that limit.

use std::path::Path;

use crate::error::{Error, Result};
use crate::sink::local::ArtifactWriter;

/// Tars `src` into `archive` (entries relative to `src`, symlinks kept as links). Blocking.
pub fn tar_directory(src: &Path, archive: &mut ArtifactWriter) -> Result<()> {
    if !src.is_dir() {
        return Err(Error::NotFound(format!(
            "MINIO_DATA_DIR {} is not a directory",
            src.display()
        )));
    }
    let temp = archive.temp_path().to_path_buf();
    let mut tar = tar::Builder::new(archive.sink());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", src)
        .map_err(|e| match e.raw_os_error() {
            Some(_) if e.kind() == std::io::ErrorKind::StorageFull => {
                Error::io("cannot write", &temp, e)
            }
            _ => Error::io("cannot archive", src, e),
        })?;
    tar.finish()
        .map_err(|e| Error::io("cannot write", &temp, e))?;
    Ok(())
}
