//! The off-site remote: one flat directory of files named as in the backup directory, reached
//! through S3, WebDAV, SFTP or a mounted share. This layer moves whole files: it streams uploads
//! from disk and downloads as byte streams, lists, and deletes. It knows nothing of runs; the
//! `ops::offsite` layer decides what to copy and when.
//!
//! Every upload lands under its final name only when complete: S3 completes a multipart upload
//! (or a single PUT) atomically; WebDAV and SFTP write a hidden partial name and then rename;
//! a file:// share writes a temp file, fsyncs, renames and fsyncs the directory.

mod dal;
mod sftp;

use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::config::{RemoteConfig, RemoteTarget};
use crate::error::{RemoteError, RemoteErrorKind, Result};

/// Files being uploaded carry this prefix until they are complete; they are never listed.
pub const PARTIAL_PREFIX: &str = ".stackback-partial.";

/// A download, chunk by chunk.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A file on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub name: String,
    pub size: u64,
}

/// A connection to the remote.
pub struct Remote {
    backend: Backend,
    display: String,
}

enum Backend {
    Dal(dal::DalRemote),
    Sftp(sftp::SftpRemote),
}

impl Remote {
    /// Connects. `state_dir` is a private, writable directory for the ssh client's control files
    /// (never `$HOME`, read-only under our units); `local_dir` is BACKUP_DIR, which a file://
    /// remote must not share a file system with unless allowed.
    pub async fn connect(
        cfg: &RemoteConfig,
        state_dir: &Path,
        local_dir: Option<&Path>,
    ) -> Result<Remote> {
        let display = cfg.display.clone();
        let backend = match &cfg.target {
            RemoteTarget::Sftp { .. } => {
                Backend::Sftp(sftp::SftpRemote::connect(&cfg.target, &display, state_dir).await?)
            }
            other => Backend::Dal(dal::DalRemote::connect(other, &display, local_dir).await?),
        };
        Ok(Remote { backend, display })
    }

    /// The remote as people may read it.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Every complete file at the top of the remote directory (partial uploads and
    /// subdirectories left out).
    pub async fn list(&self) -> Result<Vec<RemoteFile>> {
        Ok(self
            .raw_list()
            .await?
            .into_iter()
            .filter(|f| !f.name.starts_with('.') && !f.name.contains('/'))
            .collect())
    }

    /// Deletes what cut uploads left under a partial name (WebDAV, SFTP: a killed run, a dropped
    /// connection); only names of that one shape, whose rest is a plain file name, are touched.
    /// Returns how many went.
    pub async fn sweep_partials(&self) -> Result<usize> {
        let mut n = 0;
        for f in self.raw_list().await? {
            let Some(rest) = f.name.strip_prefix(PARTIAL_PREFIX) else {
                continue;
            };
            if check_name(&self.display, rest).is_err() {
                continue;
            }
            self.raw_delete(&f.name).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Uploads a local file under `name`, streamed; returns the bytes sent. The file appears
    /// under `name` only once complete.
    pub async fn upload(&self, local: &Path, name: &str) -> Result<u64> {
        check_name(&self.display, name)?;
        match &self.backend {
            Backend::Dal(d) => d.upload(local, name).await,
            Backend::Sftp(s) => s.upload(local, name).await,
        }
    }

    /// Streams a remote file.
    pub async fn read(&self, name: &str) -> Result<ByteStream> {
        check_name(&self.display, name)?;
        match &self.backend {
            Backend::Dal(d) => d.read(name).await,
            Backend::Sftp(s) => s.read(name).await,
        }
    }

    /// Deletes a remote file; a file already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        check_name(&self.display, name)?;
        self.raw_delete(name).await
    }

    /// Every file at the top of the remote directory, hidden and partial ones included.
    async fn raw_list(&self) -> Result<Vec<RemoteFile>> {
        match &self.backend {
            Backend::Dal(d) => d.list().await,
            Backend::Sftp(s) => s.list().await,
        }
    }

    /// Deletes `name`, which the caller has checked.
    async fn raw_delete(&self, name: &str) -> Result<()> {
        match &self.backend {
            Backend::Dal(d) => d.delete(name).await,
            Backend::Sftp(s) => s.delete(name).await,
        }
    }

    /// Ends the session (the ssh master of an sftp remote).
    pub async fn close(self) {
        if let Backend::Sftp(s) = self.backend {
            s.close().await;
        }
    }
}

/// Names come from records and listings: only plain file names are ever used as paths.
fn check_name(target: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control);
    if ok {
        return Ok(());
    }
    Err(error(
        "using a file name",
        target,
        Some(name),
        RemoteErrorKind::Other,
        "not a plain file name: refused",
    )
    .into())
}

fn error(
    op: &'static str,
    target: &str,
    name: Option<&str>,
    kind: RemoteErrorKind,
    detail: impl std::fmt::Display,
) -> RemoteError {
    RemoteError {
        op,
        target: target.to_string(),
        name: name.map(String::from),
        kind,
        detail: detail.to_string(),
    }
}

/// An io::Error's kind, as a remote error kind.
pub fn io_kind(e: &std::io::Error) -> RemoteErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => RemoteErrorKind::NotFound,
        K::PermissionDenied => RemoteErrorKind::Auth,
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::TimedOut
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected => RemoteErrorKind::Unreachable,
        _ => RemoteErrorKind::Other,
    }
}
