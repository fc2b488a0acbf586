//! The SFTP remote, through the system `ssh` client (openssh) and its SFTP subsystem.
//!
//! Why not OpenDAL's SFTP service: it reads the user's `~/.ssh` for host keys and keeps its
//! control socket under `$HOME`, which is read-only under our units and image. Here the known-hosts
//! file is the one the operator named, checked strictly (an unknown or changed host key is an
//! error, never a prompt), no system or user ssh configuration is read, and the control socket
//! lives in a directory we own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use openssh::{KnownHosts, SessionBuilder};
use openssh_sftp_client::file::TokioCompatFile;
use openssh_sftp_client::{Sftp, SftpOptions};
use tokio::io::AsyncReadExt;

use super::{error, ByteStream, RemoteFile, PARTIAL_PREFIX};
use crate::config::RemoteTarget;
use crate::error::{RemoteErrorKind, Result};

pub(super) struct SftpRemote {
    sftp: Sftp,
    dir: PathBuf,
    display: String,
}

impl SftpRemote {
    pub(super) async fn connect(
        target: &RemoteTarget,
        display: &str,
        state_dir: &Path,
    ) -> Result<SftpRemote> {
        let RemoteTarget::Sftp {
            user,
            host,
            port,
            path,
            key_file,
            known_hosts,
        } = target
        else {
            unreachable!("SftpRemote::connect is only called for sftp:// targets")
        };
        let fail = |kind, detail: String| error("connecting", display, None, kind, detail);
        let state = state_dir.join("ssh");
        make_private_dir(&state)
            .map_err(|e| fail(RemoteErrorKind::Other, format!("{}: {e}", state.display())))?;
        // The control socket's path must fit in a Unix socket address (107 bytes), which a
        // BACKUP_DIR of ordinary length would not leave room for: it lives in a short private
        // directory of our own under the temporary directory instead.
        let control = control_dir().map_err(|e| {
            fail(
                RemoteErrorKind::Other,
                format!("the ssh control directory: {e}"),
            )
        })?;
        // An ssh_config of our own: no user or system configuration leaks in, host keys come
        // only from the operator's file.
        let config = state.join("config");
        let text = format!(
            "GlobalKnownHostsFile /dev/null\nUserKnownHostsFile {}\nStrictHostKeyChecking yes\nBatchMode yes\nIdentitiesOnly yes\nIdentityFile {}\nServerAliveInterval 15\nServerAliveCountMax 4\n",
            known_hosts.display(),
            key_file.display()
        );
        std::fs::write(&config, text)
            .map_err(|e| fail(RemoteErrorKind::Other, format!("{}: {e}", config.display())))?;
        match host_is_known(known_hosts, host, *port) {
            Ok(true) => {}
            Ok(false) => {
                return Err(fail(
                    RemoteErrorKind::HostKey,
                    format!(
                    "{} has no host key for {host} port {port}: an unknown host is never accepted",
                    known_hosts.display()
                ),
                )
                .into())
            }
            Err(e) => {
                return Err(fail(
                    RemoteErrorKind::Other,
                    format!(
                        "cannot run ssh-keygen to read {}: {e} (install openssh-client)",
                        known_hosts.display()
                    ),
                )
                .into())
            }
        }
        let mut b = SessionBuilder::default();
        b.known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(known_hosts)
            .keyfile(key_file)
            .config_file(&config)
            .control_directory(&control)
            .connect_timeout(Duration::from_secs(20))
            .server_alive_interval(Duration::from_secs(15))
            .port(*port);
        if let Some(u) = user {
            b.user(u.clone());
        }
        let session = b.connect(host).await.map_err(|e| {
            let text = e.to_string();
            let source = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            fail(ssh_kind(&e), format!("{text}{source}"))
        })?;
        let sftp = Sftp::from_session(session, SftpOptions::default())
            .await
            .map_err(|e| fail(sftp_kind(&e), e.to_string()))?;
        let remote = SftpRemote {
            sftp,
            dir: PathBuf::from(path),
            display: display.to_string(),
        };
        remote.ensure_dir().await?;
        Ok(remote)
    }

    /// Creates the remote directory (and its parents) when missing.
    async fn ensure_dir(&self) -> Result<()> {
        let mut fs = self.sftp.fs();
        if fs.metadata(&self.dir).await.is_ok() {
            return Ok(());
        }
        let mut at = PathBuf::new();
        for part in self.dir.components() {
            at.push(part);
            if fs.metadata(&at).await.is_err() {
                fs.create_dir(&at)
                    .await
                    .map_err(|e| self.err("creating the remote directory", None, &e))?;
            }
        }
        Ok(())
    }

    fn err(
        &self,
        op: &'static str,
        name: Option<&str>,
        e: &openssh_sftp_client::Error,
    ) -> crate::error::Error {
        error(op, &self.display, name, sftp_kind(e), e).into()
    }

    pub(super) async fn list(&self) -> Result<Vec<RemoteFile>> {
        let mut fs = self.sftp.fs();
        let dir = fs
            .open_dir(&self.dir)
            .await
            .map_err(|e| self.err("listing", None, &e))?;
        let entries: Vec<_> = dir
            .read_dir()
            .try_collect()
            .await
            .map_err(|e| self.err("listing", None, &e))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| {
                let name = e.filename().to_str()?.to_string();
                Some(RemoteFile {
                    size: e.metadata().len().unwrap_or(0),
                    name,
                })
            })
            .collect())
    }

    /// Streams `local` into a partial name, fsyncs it where the server can, then renames it
    /// into place: a cut upload never shows under the final name.
    pub(super) async fn upload(&self, local: &Path, name: &str) -> Result<u64> {
        let partial = self.dir.join(format!("{PARTIAL_PREFIX}{name}"));
        let target = self.dir.join(name);
        let mut src = tokio::fs::File::open(local).await.map_err(|e| {
            error(
                "reading the local file",
                &self.display,
                Some(name),
                RemoteErrorKind::Other,
                e,
            )
        })?;
        let mut file = self
            .sftp
            .create(&partial)
            .await
            .map_err(|e| self.err("uploading", Some(name), &e))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        loop {
            let n = src.read(&mut buf).await.map_err(|e| {
                error(
                    "reading the local file",
                    &self.display,
                    Some(name),
                    RemoteErrorKind::Other,
                    e,
                )
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .await
                .map_err(|e| self.err("uploading", Some(name), &e))?;
            sent += n as u64;
        }
        // fsync@openssh.com where the server offers it; an older server cannot do better.
        if let Err(e) = file.sync_all().await {
            if !matches!(e, openssh_sftp_client::Error::UnsupportedExtension(_)) {
                return Err(self.err("uploading", Some(name), &e));
            }
        }
        file.close()
            .await
            .map_err(|e| self.err("uploading", Some(name), &e))?;
        let mut fs = self.sftp.fs();
        // SFTP's plain rename refuses an existing target; a re-upload replaces it.
        let _ = fs.remove_file(&target).await;
        fs.rename(&partial, &target)
            .await
            .map_err(|e| self.err("uploading", Some(name), &e))?;
        Ok(sent)
    }

    pub(super) async fn read(&self, name: &str) -> Result<ByteStream> {
        let file = self
            .sftp
            .open(self.dir.join(name))
            .await
            .map_err(|e| self.err("reading", Some(name), &e))?;
        let reader = TokioCompatFile::new(file);
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024);
        Ok(Box::pin(stream.map(|r| r.map_err(std::io::Error::other))))
    }

    pub(super) async fn delete(&self, name: &str) -> Result<()> {
        let mut fs = self.sftp.fs();
        match fs.remove_file(self.dir.join(name)).await {
            Ok(()) => Ok(()),
            Err(e) if sftp_kind(&e) == RemoteErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("deleting", Some(name), &e)),
        }
    }

    pub(super) async fn close(self) {
        // openssh-sftp-client 0.15's close() unwraps the session's Arc and panics when one of its
        // own background tasks still holds it (a race seen in the tests). In a task of its own
        // such a panic is a logged failure to close, after the copy is done, never a crash.
        match tokio::spawn(async move { self.sftp.close().await }).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("closing the sftp session: {e}"),
            Err(e) => tracing::warn!("closing the sftp session failed: {e}"),
        }
    }
}

/// `$TMPDIR/stackback-ssh-<uid>`, 0700 and ours: a directory someone else made there (to watch
/// or hijack the socket) is refused, never used.
fn control_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("stackback-ssh-{uid}"));
    make_private_dir(&dir)?;
    let m = std::fs::symlink_metadata(&dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private directory of uid {uid}: remove it",
            dir.display()
        )));
    }
    Ok(dir)
}

fn make_private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
}

/// The ssh client's failures arrive as an exit status and its stderr (kept in the detail); the
/// kind comes from the I/O error alone. An unknown host is caught before, by [`host_is_known`].
fn ssh_kind(e: &openssh::Error) -> RemoteErrorKind {
    match e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => super::io_kind(io),
        _ => RemoteErrorKind::Unreachable,
    }
}

/// Whether `known_hosts` holds a key for the host, asked of `ssh-keygen -F` (its exit status):
/// an unlisted host is refused with its own kind before ssh is started.
fn host_is_known(known_hosts: &Path, host: &str, port: u16) -> std::io::Result<bool> {
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    let out = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(&name)
        .arg("-f")
        .arg(known_hosts)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    Ok(out.success())
}

fn sftp_kind(e: &openssh_sftp_client::Error) -> RemoteErrorKind {
    use openssh_sftp_client::error::SftpErrorKind as K;
    match e {
        openssh_sftp_client::Error::SftpError(K::NoSuchFile, _) => RemoteErrorKind::NotFound,
        openssh_sftp_client::Error::SftpError(K::PermDenied, _) => RemoteErrorKind::Auth,
        openssh_sftp_client::Error::IOError(io) => super::io_kind(io),
        openssh_sftp_client::Error::RemoteChildSpawnError(_) => RemoteErrorKind::Unreachable,
        _ => RemoteErrorKind::Other,
    }
}
