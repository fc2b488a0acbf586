//! The backup directory on local disk: the only code that creates, renames or removes files there.
//!
//! An artifact is written to a hidden temp name in the same directory (`.stackback-tmp.<name>.XXXX`,
//! mode 0600), fsynced, renamed to its final name, and the directory is fsynced, so a crash leaves
//! either nothing under the final name or the whole file. A temp file is removed when its
//! [`TempArtifact`] is dropped without being committed (error, cancellation); one left by a SIGKILL
//! carries the temp prefix, which no listing counts and prune removes.
//!
//! The directory lock (`.stackback.lock`, `flock`-style via `File::try_lock`) keeps two runs from
//! writing at once: the daemon's and a manual `stackback run`, say.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::crypt::Recipients;
use crate::error::{Error, Result};
use crate::pipeline::{Compression, Digest, StoreWriter};
use crate::sink::follow::{FollowHandle, Follower, Published};

/// Prefix of every temp file stackback writes in the backup directory.
pub const TEMP_PREFIX: &str = ".stackback-tmp.";
/// Prefix of a run record being retired by prune: no longer a run, its artifacts still to delete.
pub const RETIRED_PREFIX: &str = ".stackback-retired.";
const LOCK_NAME: &str = ".stackback.lock";

/// An open backup directory.
#[derive(Debug, Clone)]
pub struct BackupDir {
    path: PathBuf,
}

impl BackupDir {
    /// Opens the directory, creating it (mode 0700, whatever the umask) when missing.
    pub fn create(path: &Path) -> Result<Self> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| Error::io("cannot create backup directory", path, e))?;
            // DirBuilder's mode is filtered by the umask; set it explicitly.
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("cannot set permissions on", path, e))?;
        } else if !path.is_dir() {
            return Err(Error::io(
                "backup directory is not a directory:",
                path,
                io::Error::from(io::ErrorKind::NotADirectory),
            ));
        }
        Ok(BackupDir {
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing directory for reading (list, verify, status).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::NotFound(format!(
                "backup directory {} does not exist (check BACKUP_DIR or --backup-dir)",
                path.display()
            )));
        }
        Ok(BackupDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Takes the directory's lock, or fails at once with [`Error::Locked`].
    pub fn lock(&self) -> Result<DirLock> {
        self.lock_named(LOCK_NAME)
    }

    /// Like [`BackupDir::lock`], on another lock file of the directory: for work that must not
    /// run twice at once but need not keep backups from running (a restore test).
    pub fn lock_named(&self, name: &str) -> Result<DirLock> {
        let path = self.path.join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("cannot open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {
                // The holder's pid helps whoever meets the lock; the lock itself is the flock.
                let _ = file.set_len(0);
                let _ = writeln!(file, "pid {}", std::process::id());
                Ok(DirLock { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "unknown process".into());
                // The holder wrote its pid when it took the lock: the file's time is then.
                let age = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok());
                Err(Error::Locked { path, holder, age })
            }
            Err(fs::TryLockError::Error(e)) => Err(Error::io("cannot lock", &path, e)),
        }
    }

    /// True when another process holds the lock right now.
    pub fn is_locked(&self) -> bool {
        let path = self.path.join(LOCK_NAME);
        match File::open(&path) {
            Ok(f) => matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Starts a new artifact under a temp name.
    pub fn create_temp(&self, final_name: &str) -> Result<TempArtifact> {
        let file = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{final_name}."))
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.path)
            .map_err(|e| Error::io("cannot create a temp file in", &self.path, e))?;
        Ok(TempArtifact {
            file,
            final_path: self.path.join(final_name),
            dir: self.path.clone(),
        })
    }

    /// Writes a small file atomically (temp, fsync, rename, fsync dir), mode 0600.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut tmp = self.create_temp(name)?;
        tmp.file
            .write_all(bytes)
            .map_err(|e| Error::io("cannot write", tmp.file.path().to_path_buf(), e))?;
        tmp.commit()?;
        Ok(())
    }

    /// Removes a file; a file that is already gone is not an error.
    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.path.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot remove", path, e)),
        }
    }

    pub fn sync(&self) -> Result<()> {
        sync_dir(&self.path)
    }

    /// Names of the regular files in the directory, sorted.
    pub fn file_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let rd = fs::read_dir(&self.path)
            .map_err(|e| Error::io("cannot read backup directory", &self.path, e))?;
        for entry in rd {
            let entry =
                entry.map_err(|e| Error::io("cannot read backup directory", &self.path, e))?;
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Free and total bytes on the directory's file system.
    pub fn space(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.path)
            .map_err(|e| Error::io("cannot stat file system of", &self.path, e.into()))?;
        Ok((
            st.f_bavail.saturating_mul(st.f_frsize),
            st.f_blocks.saturating_mul(st.f_frsize),
        ))
    }
}

/// Held while a run writes; released on drop.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// An artifact being written. Dropped without [`TempArtifact::commit`], its temp file is removed.
#[derive(Debug)]
pub struct TempArtifact {
    file: tempfile::NamedTempFile,
    final_path: PathBuf,
    dir: PathBuf,
}

impl TempArtifact {
    pub fn temp_path(&self) -> &Path {
        self.file.path()
    }

    /// The open file, for the pipeline to write into.
    pub fn writer(&mut self) -> &mut File {
        self.file.as_file_mut()
    }

    /// fsync, rename to the final name, fsync the directory.
    pub fn commit(self) -> Result<PathBuf> {
        let TempArtifact {
            file,
            final_path,
            dir,
        } = self;
        file.as_file()
            .sync_all()
            .map_err(|e| Error::io("cannot fsync", file.path().to_path_buf(), e))?;
        let tmp_path = file.path().to_path_buf();
        file.persist(&final_path)
            .map_err(|e| Error::io("cannot rename temp file to", &final_path, e.error))
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp_path);
            })?;
        sync_dir(&dir)?;
        Ok(final_path)
    }
}

/// A new artifact: the pipeline writing into a temp file of the backup directory.
/// Dropped before [`ArtifactWriter::commit`], the temp file is removed.
pub struct ArtifactWriter {
    temp: TempArtifact,
    w: StoreWriter<BufWriter<Published>>,
    follow: FollowHandle,
}

impl ArtifactWriter {
    /// A writer of `name` (the final name; sealed when `recipients` are given, and then `name`
    /// must end with `.age`).
    pub fn new(
        dir: &BackupDir,
        name: &str,
        compression: Compression,
        level: Option<i32>,
        recipients: Option<&Recipients>,
    ) -> Result<Self> {
        Self::build(dir, name, compression, level, recipients, true)
    }

    /// A writer whose file is read back as it is written, and that reader: the writer computes
    /// only the stored BLAKE3, and the reader, which reads every stored byte anyway, the SHA-256
    /// ([`crate::pipeline::StoreWriter::with_stored_sha256`]; the commit's [`Digest`] then has no
    /// `stored_sha256`).
    pub fn followed(
        dir: &BackupDir,
        name: &str,
        compression: Compression,
        level: Option<i32>,
        recipients: Option<&Recipients>,
    ) -> Result<(Self, Follower)> {
        let w = Self::build(dir, name, compression, level, recipients, false)?;
        let f = w.follow()?;
        Ok((w, f))
    }

    fn build(
        dir: &BackupDir,
        name: &str,
        compression: Compression,
        level: Option<i32>,
        recipients: Option<&Recipients>,
        stored_sha256: bool,
    ) -> Result<Self> {
        let mut temp = dir.create_temp(name)?;
        let path = temp.temp_path().to_path_buf();
        let file = temp
            .writer()
            .try_clone()
            .map_err(|e| Error::io("cannot reopen", &path, e))?;
        let published = Published::new(file);
        let follow = published
            .handle()
            .map_err(|e| Error::io("cannot stat", &path, e))?;
        let w = StoreWriter::with_stored_sha256(
            BufWriter::with_capacity(256 * 1024, published),
            compression,
            level,
            recipients,
            stored_sha256,
        )
        .map_err(|e| Error::io("cannot start compressing into", &path, e))?;
        Ok(ArtifactWriter { temp, w, follow })
    }

    pub fn temp_path(&self) -> &Path {
        self.temp.temp_path()
    }

    /// A reader of the stored bytes as they reach the file, ending once [`ArtifactWriter::commit`]
    /// has written the last one, failing when the writer is dropped instead
    /// ([`crate::sink::follow`]).
    fn follow(&self) -> Result<Follower> {
        let path = self.temp.temp_path().to_path_buf();
        self.follow
            .open(&path)
            .map_err(|e| Error::io("cannot open for reading back", &path, e))
    }

    /// The last plain bytes written so far (see [`crate::pipeline::TAIL`]).
    pub fn plain_tail(&self) -> &[u8] {
        self.w.tail()
    }

    /// Where the source writes its plain bytes.
    pub fn sink(&mut self) -> &mut dyn Write {
        &mut self.w
    }

    /// Finishes the stream, fsyncs, renames to the final name and fsyncs the directory.
    pub fn commit(self) -> Result<Digest> {
        let ArtifactWriter { temp, w, .. } = self;
        let path = temp.temp_path().to_path_buf();
        let (buf, digest) = w
            .finish()
            .map_err(|e| Error::io("cannot finish writing", &path, e))?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("cannot write", &path, e.into_error()))?;
        // Followers may finish reading while the fsync below runs.
        file.end();
        drop(file);
        temp.commit()?;
        Ok(digest)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The umask is process-wide: the check runs in a child process of this test binary, so the
    /// other tests running meanwhile never see a changed umask.
    #[test]
    fn creates_private_dir_and_files_whatever_the_umask() {
        const CHILD: &str = "STACKBACK_UMASK_CHILD";
        if let Some(root) = std::env::var_os(CHILD) {
            rustix::process::umask(rustix::fs::Mode::empty());
            let dir = BackupDir::create(&Path::new(&root).join("a/b")).unwrap();
            let mut t = dir.create_temp("x.sql.gz").unwrap();
            t.writer().write_all(b"hello").unwrap();
            t.commit().unwrap();
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sink::local::tests::creates_private_dir_and_files_whatever_the_umask",
                "--test-threads=1",
            ])
            .env(CHILD, root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let dir = root.path().join("a/b");
        let path = dir.join("x.sql.gz");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"hello");
    }

    #[test]
    fn dropped_temp_files_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dir = BackupDir::create(root.path()).unwrap();
        let t = dir.create_temp("y.sql.gz").unwrap();
        let p = t.temp_path().to_path_buf();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists());
    }

    #[test]
    fn a_second_lock_fails_with_locked() {
        let root = tempfile::tempdir().unwrap();
        let dir = BackupDir::create(root.path()).unwrap();
        let _held = dir.lock().unwrap();
        let err = dir.lock().unwrap_err();
        assert_eq!(err.exit_code(), crate::error::exit::LOCKED);
    }
}
