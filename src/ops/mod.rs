//! Orchestration: each public function here is one command's worth of work, returning a typed
//! report. Nothing in `ops` prints; the CLI renders the reports.

pub mod archive;
pub mod backup;
pub mod daemon;
pub mod list;
pub mod prune;
pub mod restore;
pub mod verify;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::pipeline::{Compression, Digest, StoreWriter};
use crate::sink::local::{BackupDir, TempArtifact};

/// A new artifact: the pipeline writing into a temp file of the backup directory.
/// Dropped before [`ArtifactWriter::commit`], the temp file is removed.
pub struct ArtifactWriter {
    temp: TempArtifact,
    w: StoreWriter<BufWriter<File>>,
}

impl ArtifactWriter {
    pub fn new(
        dir: &BackupDir,
        name: &str,
        compression: Compression,
        level: Option<i32>,
    ) -> Result<Self> {
        let mut temp = dir.create_temp(name)?;
        let file = temp
            .writer()
            .try_clone()
            .map_err(|e| Error::io("cannot reopen", temp.temp_path().to_path_buf(), e))?;
        let w = StoreWriter::new(
            BufWriter::with_capacity(256 * 1024, file),
            compression,
            level,
        )
        .map_err(|e| {
            Error::io(
                "cannot start compressing into",
                temp.temp_path().to_path_buf(),
                e,
            )
        })?;
        Ok(ArtifactWriter { temp, w })
    }

    pub fn temp_path(&self) -> &Path {
        self.temp.temp_path()
    }

    /// Where the source writes its plain bytes.
    pub fn sink(&mut self) -> &mut dyn Write {
        &mut self.w
    }

    /// Finishes the stream, fsyncs, renames to the final name and fsyncs the directory.
    pub fn commit(self) -> Result<Digest> {
        let ArtifactWriter { temp, w } = self;
        let path = temp.temp_path().to_path_buf();
        let (buf, digest) = w
            .finish()
            .map_err(|e| Error::io("cannot finish writing", &path, e))?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("cannot write", &path, e.into_error()))?;
        drop(file);
        temp.commit()?;
        Ok(digest)
    }
}
