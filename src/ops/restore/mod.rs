//! Restores: a database dump back into PostgreSQL ([`db`]), a bucket archive back into any
//! S3-compatible server ([`objects`]), a volume archive into a directory ([`volume`]), and a whole
//! run ([`restore_run`]).
//!
//! Every restore first proves the artifact: its SHA-256 must equal the run record's (and the object
//! index's too), so a damaged backup is refused before anything is written.

pub mod db;
pub mod objects;
mod parallel;
pub mod volume;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use crate::catalog::{ArtifactKind, ArtifactRecord, Catalog};
use crate::config::Config;
use crate::crypt::{Identities, UnsealError};
use crate::error::{Checksum, Error, Problem, Result};
use crate::ops::Selector;
use crate::pipeline::{blake3_file, hash_file, open_plain, OpenError, Opening, PlainReader};
use crate::sink::local::BackupDir;

pub use db::{DbRestoreOptions, DbRestoreReport};
pub use objects::{Existing, ObjectRestoreOptions, ObjectRestoreReport};
pub use volume::VolumeRestoreReport;

/// Proves an artifact's stored file against the run record before anything is touched: by its
/// BLAKE3 when the record keeps one (a tenth of SHA-256's CPU here), else by its SHA-256; and its
/// size. Blocking. (A bucket archive's index sidecar is checked by the object restore, which falls
/// back to the archive's own index.)
pub fn check_stored(dir: &Path, a: &ArtifactRecord) -> Result<()> {
    let path = dir.join(&a.file);
    let read = |e| Error::io("cannot read", &path, e);
    let (bytes, got, want) = match &a.stored_blake3 {
        Some(want) => {
            let (bytes, got) = blake3_file(&path).map_err(read)?;
            (bytes, got, want)
        }
        None => {
            let (bytes, got) = hash_file(&path).map_err(read)?;
            (bytes, got, &a.stored_sha256)
        }
    };
    let refuse = |problem| {
        Error::verification(
            format!("{} (refusing to restore a damaged backup)", a.file),
            problem,
        )
    };
    if got != *want {
        return Err(refuse(Problem::ChecksumMismatch {
            what: Checksum::Stored,
            actual: got,
            recorded: want.clone(),
        }));
    }
    if bytes != a.stored_bytes {
        return Err(refuse(Problem::SizeMismatch {
            actual: bytes,
            recorded: a.stored_bytes,
        }));
    }
    Ok(())
}

/// How to read a proven artifact's plain content: its compression, and the identities when it
/// is sealed.
#[derive(Debug, Clone)]
pub struct Stored {
    pub compression: crate::pipeline::Compression,
    pub sealed: bool,
    pub ids: Option<Arc<Identities>>,
}

impl Stored {
    /// Opens the file (decrypting, decompressing). A key problem is a settings error (exit 2);
    /// a damaged header is a damaged backup (exit 3). The file was proven by its stored SHA-256
    /// ([`check_stored`]) and the codec checks every block as it is read, so neither side is
    /// hashed again: those single-core passes would compete with the server taking the load.
    pub fn open(&self, path: &Path) -> Result<PlainReader<BufReader<File>>> {
        let how = Opening {
            compression: self.compression,
            unseal: self.ids.as_deref(),
            sealed: self.sealed,
        };
        open_plain(path, how)
            .map(|r| r.without_plain_hash().without_stored_hash())
            .map_err(|e| open_error(path, e))
    }
}

fn open_error(path: &Path, e: OpenError) -> Error {
    let file = path.display().to_string();
    match e {
        OpenError::NoIdentity | OpenError::Unseal(UnsealError::NoMatchingKey) => Error::Key {
            file,
            detail: e.to_string(),
        },
        OpenError::Unseal(UnsealError::Corrupt(d)) => Error::verification(
            format!("{file} (refusing to restore a damaged backup)"),
            Problem::undecodable(format!("age header: {d}")),
        ),
        OpenError::Unseal(UnsealError::Io(e)) => Error::io("cannot open", path, e),
    }
}

/// The verified artifacts of `kind` that `sel` names, each proven against its checksum, and for
/// a sealed one, opened once with the identity: a missing or wrong key is refused before
/// anything is written.
pub(crate) async fn proven(
    cfg: &Config,
    dir: &BackupDir,
    kind: ArtifactKind,
    sel: &Selector,
) -> Result<Vec<(ArtifactRecord, Stored)>> {
    let (_, arts) = sel.artifacts(&Catalog::new(dir.clone()), kind)?;
    let ids = if arts.iter().any(ArtifactRecord::sealed) {
        cfg.identities()?
    } else {
        None
    };
    let proven: Vec<(ArtifactRecord, Stored)> = arts
        .into_iter()
        .map(|a| {
            let stored = Stored {
                compression: a.compression,
                sealed: a.sealed(),
                ids: ids.clone(),
            };
            (a, stored)
        })
        .collect();
    let (d, to_check) = (dir.path().to_path_buf(), proven.clone());
    crate::ops::blocking("checking the backup", move || {
        to_check.iter().try_for_each(|(a, stored)| {
            check_stored(&d, a)?;
            if a.sealed() {
                // Opening reads the header and unwraps the file key: no key, no restore.
                stored.open(&d.join(&a.file)).map(drop)?;
            }
            Ok(())
        })
    })
    .await?;
    Ok(proven)
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
    stop: impl std::future::Future<Output = String> + Clone,
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
    // The database step finishes what it must on a signal (drops what it made, or completes its
    // swap) before it returns; the uploads are simply abandoned.
    let db = db::restore_db(cfg, &sel, db_opts, stop.clone()).await?;
    let opts = ObjectRestoreOptions {
        bucket: None,
        endpoint: None,
        prefix: None,
        existing,
        create_bucket,
        verify: true,
    };
    let objects = if has_buckets {
        tokio::select! {
            r = objects::restore_objects(cfg, &sel, &opts) => r?,
            why = stop => return Err(Error::step("restoring the run's buckets", why)),
        }
    } else {
        Vec::new()
    };
    Ok(RunRestoreReport { db, objects })
}
