//! S3, WebDAV and file:// remotes through Apache OpenDAL, with retries and timeouts.
//!
//! Two uploads bypass OpenDAL's writer, for reasons checked in its 0.59 source: its WebDAV writer
//! buffers the whole file for one PUT (unbounded memory), so WebDAV uploads are a streamed PUT of
//! a partial name with a Content-Length, then a MOVE; and its file system writer does not fsync,
//! so file:// uploads are written here (temp, fsync, rename, fsync the directory).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};
use tokio::io::AsyncReadExt;

use super::{error, io_kind, ByteStream, RemoteFile, PARTIAL_PREFIX};
use crate::config::RemoteTarget;
use crate::error::{RemoteErrorKind, Result};

/// Bytes read from disk per write call.
const READ_CHUNK: usize = 1 << 20;

pub(super) struct DalRemote {
    op: Operator,
    target: String,
    kind: Kind,
}

enum Kind {
    S3,
    WebDav(WebDav),
    File(PathBuf),
}

struct WebDav {
    http: reqwest::Client,
    /// The collection's URL, ending in `/`.
    base: url::Url,
    auth: Option<(String, String)>,
}

impl DalRemote {
    pub(super) async fn connect(
        t: &RemoteTarget,
        target: &str,
        local_dir: Option<&Path>,
    ) -> Result<DalRemote> {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(opendal::install_default);
        let fail = |e: opendal::Error| super::Remote::dal_error("connecting", target, None, &e);
        let (op, kind) = match t {
            RemoteTarget::S3 { .. } => (s3(t).map_err(fail)?, Kind::S3),
            RemoteTarget::WebDav {
                endpoint,
                user,
                password,
            } => {
                let op = webdav(endpoint, user.as_deref(), password.as_ref()).map_err(fail)?;
                let dav = WebDav {
                    http: reqwest::Client::builder()
                        .connect_timeout(Duration::from_secs(20))
                        .build()
                        .map_err(|e| {
                            error("connecting", target, None, RemoteErrorKind::Other, e)
                        })?,
                    base: endpoint.clone(),
                    auth: user.clone().map(|u| {
                        (
                            u,
                            password
                                .as_ref()
                                .map(|p| p.expose().to_string())
                                .unwrap_or_default(),
                        )
                    }),
                };
                dav.make_collection(target).await?;
                (op, Kind::WebDav(dav))
            }
            RemoteTarget::File {
                path,
                allow_same_fs,
            } => {
                prepare_share(path, *allow_same_fs, local_dir, target)?;
                let op =
                    Operator::new(opendal::services::Fs::default().root(&path.to_string_lossy()))
                        .map_err(fail)?;
                (op, Kind::File(path.clone()))
            }
            RemoteTarget::Sftp { .. } => unreachable!("sftp remotes have their own client"),
        };
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(120))
                    .with_io_timeout(Duration::from_secs(300)),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(4)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(20)),
            );
        let remote = DalRemote {
            op,
            target: target.to_string(),
            kind,
        };
        // Fail now, with the remote's own answer, rather than half-way through a copy.
        remote.list().await?;
        Ok(remote)
    }

    pub(super) async fn list(&self) -> Result<Vec<RemoteFile>> {
        let entries = self
            .op
            .list("/")
            .await
            .map_err(|e| self.err("listing", None, &e))?;
        let mut files = Vec::new();
        for e in entries {
            if !e.metadata().is_file() {
                continue;
            }
            let name = e.name().to_string();
            let mut size = e.metadata().content_length();
            if size == 0 {
                // Some listings leave sizes out: ask.
                size = self
                    .op
                    .stat(&name)
                    .await
                    .map_err(|err| self.err("stat", Some(&name), &err))?
                    .content_length();
            }
            files.push(RemoteFile { name, size });
        }
        Ok(files)
    }

    pub(super) async fn upload(&self, local: &Path, name: &str) -> Result<u64> {
        match &self.kind {
            Kind::S3 => self.upload_s3(local, name).await,
            Kind::WebDav(dav) => dav.upload(&self.target, local, name).await,
            Kind::File(root) => upload_file(&self.target, root, local, name).await,
        }
    }

    async fn upload_s3(&self, local: &Path, name: &str) -> Result<u64> {
        let size = file_size(local).await?;
        // Parts of 8 MiB or more, at most 9,000 of them (S3 allows 10,000): two in flight keep
        // memory near 4 parts whatever the file's size.
        let chunk = (size.div_ceil(9000).max(8 << 20)).next_multiple_of(1 << 20) as usize;
        let mut w = self
            .op
            .writer_with(name)
            .chunk(chunk)
            .concurrent(2)
            .await
            .map_err(|e| self.err("upload", Some(name), &e))?;
        let mut f = open_local(local).await?;
        let mut sent = 0u64;
        let copied: std::result::Result<(), crate::error::Error> = async {
            loop {
                let chunk = read_chunk(&mut f, local).await?;
                if chunk.is_empty() {
                    return Ok(());
                }
                sent += chunk.len() as u64;
                w.write(chunk)
                    .await
                    .map_err(|e| self.err("upload", Some(name), &e))?;
            }
        }
        .await;
        if let Err(e) = copied {
            // An unfinished multipart upload never becomes an object; abort frees its parts.
            let _ = w.abort().await;
            return Err(e);
        }
        // Part uploads run in the background and their failures surface here, at close: the
        // upload must be aborted then too, or each failed attempt leaves an open multipart
        // upload whose parts the remote keeps (and bills) until a lifecycle rule removes them.
        if let Err(e) = w.close().await {
            let _ = w.abort().await;
            return Err(self.err("upload", Some(name), &e));
        }
        Ok(sent)
    }

    pub(super) async fn read(&self, name: &str) -> Result<ByteStream> {
        let r = self
            .op
            .reader_with(name)
            .chunk(4 << 20)
            .await
            .map_err(|e| self.err("download", Some(name), &e))?;
        let s = r
            .into_bytes_stream(..)
            .await
            .map_err(|e| self.err("download", Some(name), &e))?;
        Ok(Box::pin(s))
    }

    pub(super) async fn delete(&self, name: &str) -> Result<()> {
        self.op
            .delete(name)
            .await
            .map_err(|e| self.err("delete", Some(name), &e))
    }

    fn err(&self, op: &'static str, name: Option<&str>, e: &opendal::Error) -> crate::error::Error {
        super::Remote::dal_error(op, &self.target, name, e)
    }
}

impl super::Remote {
    /// An OpenDAL error, classified by its kind (never by its text).
    pub(super) fn dal_error(
        op: &'static str,
        target: &str,
        name: Option<&str>,
        e: &opendal::Error,
    ) -> crate::error::Error {
        let kind = match e.kind() {
            ErrorKind::NotFound => RemoteErrorKind::NotFound,
            ErrorKind::PermissionDenied => RemoteErrorKind::Auth,
            _ if e.is_temporary() || e.is_persistent() => RemoteErrorKind::Unreachable,
            _ => RemoteErrorKind::Other,
        };
        error(op, target, name, kind, e).into()
    }
}

fn s3(t: &RemoteTarget) -> opendal::Result<Operator> {
    let RemoteTarget::S3 {
        bucket,
        prefix,
        endpoint,
        region,
        access_key,
        secret_key,
        virtual_host_style,
    } = t
    else {
        unreachable!("called for s3 targets");
    };
    let mut b = opendal::services::S3::default()
        .bucket(bucket)
        .root(&format!("/{prefix}"))
        .region(region)
        .disable_config_load()
        .disable_ec2_metadata();
    if let Some(e) = endpoint {
        b = b.endpoint(e);
    }
    if let (Some(a), Some(s)) = (access_key, secret_key) {
        b = b.access_key_id(a.expose()).secret_access_key(s.expose());
    }
    if *virtual_host_style {
        b = b.enable_virtual_host_style();
    }
    Operator::new(b)
}

fn webdav(
    endpoint: &url::Url,
    user: Option<&str>,
    password: Option<&crate::redact::Secret>,
) -> opendal::Result<Operator> {
    let host = format!(
        "{}://{}{}",
        endpoint.scheme(),
        endpoint.host_str().unwrap_or_default(),
        endpoint.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    let mut b = opendal::services::Webdav::default()
        .endpoint(&host)
        .root(endpoint.path());
    if let Some(u) = user {
        b = b.username(u);
    }
    if let Some(p) = password {
        b = b.password(p.expose());
    }
    Operator::new(b)
}

impl WebDav {
    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Creates the collection and its parents (MKCOL answers 405 for one that exists).
    async fn make_collection(&self, target: &str) -> Result<()> {
        let mkcol = reqwest::Method::from_bytes(b"MKCOL").expect("a valid method");
        let mut url = self.base.clone();
        let segments: Vec<String> = self
            .base
            .path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        for i in 1..=segments.len() {
            url.set_path(&format!("/{}/", segments[..i].join("/")));
            let resp = self
                .request(mkcol.clone(), url.clone())
                .send()
                .await
                .map_err(|e| http_error("creating the collection", target, None, &e))?;
            check_status(
                "creating the collection",
                target,
                None,
                resp.status(),
                &[201, 405, 301],
            )?;
        }
        Ok(())
    }

    async fn upload(&self, target: &str, local: &Path, name: &str) -> Result<u64> {
        let size = file_size(local).await?;
        let partial = self.url(target, &format!("{PARTIAL_PREFIX}{name}"))?;
        let f = open_local(local).await?;
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, READ_CHUNK));
        let resp = self
            .request(reqwest::Method::PUT, partial.clone())
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| http_error("upload", target, Some(name), &e))?;
        check_status(
            "upload",
            target,
            Some(name),
            resp.status(),
            &[200, 201, 204],
        )?;
        let moved = self
            .request(
                reqwest::Method::from_bytes(b"MOVE").expect("a valid method"),
                partial,
            )
            .header("Destination", self.url(target, name)?.as_str())
            .header("Overwrite", "T")
            .send()
            .await
            .map_err(|e| http_error("upload", target, Some(name), &e))?;
        check_status(
            "upload (MOVE into place)",
            target,
            Some(name),
            moved.status(),
            &[200, 201, 204],
        )?;
        Ok(size)
    }

    fn url(&self, target: &str, name: &str) -> Result<url::Url> {
        self.base
            .join(
                &name
                    .replace('%', "%25")
                    .replace('#', "%23")
                    .replace('?', "%3F"),
            )
            .map_err(|e| {
                error(
                    "naming a file",
                    target,
                    Some(name),
                    RemoteErrorKind::Other,
                    e,
                )
                .into()
            })
    }
}

fn http_error(
    op: &'static str,
    target: &str,
    name: Option<&str>,
    e: &reqwest::Error,
) -> crate::error::Error {
    let kind = if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
        RemoteErrorKind::Unreachable
    } else {
        RemoteErrorKind::Other
    };
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        detail.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    error(op, target, name, kind, detail).into()
}

fn check_status(
    op: &'static str,
    target: &str,
    name: Option<&str>,
    status: reqwest::StatusCode,
    ok: &[u16],
) -> Result<()> {
    if ok.contains(&status.as_u16()) {
        return Ok(());
    }
    let kind = match status.as_u16() {
        401 | 403 => RemoteErrorKind::Auth,
        404 | 409 => RemoteErrorKind::NotFound,
        s if s >= 500 => RemoteErrorKind::Unreachable,
        _ => RemoteErrorKind::Other,
    };
    Err(error(
        op,
        target,
        name,
        kind,
        format!("the server answered HTTP {status}"),
    )
    .into())
}

/// A mounted share: created if missing, refused when it is BACKUP_DIR's own file system.
fn prepare_share(
    path: &Path,
    allow_same_fs: bool,
    local_dir: Option<&Path>,
    target: &str,
) -> Result<()> {
    let io = |e: std::io::Error| error("preparing the directory", target, None, io_kind(&e), e);
    std::fs::create_dir_all(path).map_err(io)?;
    if allow_same_fs {
        return Ok(());
    }
    if let Some(local) = local_dir.filter(|l| l.exists()) {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).map_err(io);
        if dev(path)? == dev(local)? {
            return Err(error(
                "checking the share",
                target,
                None,
                RemoteErrorKind::SameFilesystem,
                format!(
                    "{} is on the same file system as BACKUP_DIR {}: a copy there does not survive the loss of this disk (is the share mounted?)",
                    path.display(),
                    local.display()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// Temp name, fsync, rename, fsync the directory: a file:// copy is durable once listed.
async fn upload_file(target: &str, root: &Path, local: &Path, name: &str) -> Result<u64> {
    let shown = target.to_string();
    let (root, local, name, target) = (
        root.to_path_buf(),
        local.to_path_buf(),
        name.to_string(),
        target.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let io = |e: std::io::Error| error("upload", &target, Some(&name), io_kind(&e), e);
        let mut tmp = tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(&root)
            .map_err(io)?;
        let mut src = std::fs::File::open(&local).map_err(io)?;
        let n = std::io::copy(&mut src, tmp.as_file_mut()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(root.join(&name)).map_err(|e| io(e.error))?;
        std::fs::File::open(&root)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(n)
    })
    .await
    .map_err(|e| error("upload", &shown, None, RemoteErrorKind::Other, e))?
}

async fn file_size(local: &Path) -> Result<u64> {
    tokio::fs::metadata(local)
        .await
        .map(|m| m.len())
        .map_err(|e| crate::error::Error::io("cannot read", local, e))
}

async fn open_local(local: &Path) -> Result<tokio::fs::File> {
    tokio::fs::File::open(local)
        .await
        .map_err(|e| crate::error::Error::io("cannot open", local, e))
}

async fn read_chunk(f: &mut tokio::fs::File, local: &Path) -> Result<Bytes> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut filled = 0;
    while filled < buf.len() {
        let n = f
            .read(&mut buf[filled..])
            .await
            .map_err(|e| crate::error::Error::io("cannot read", local, e))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}
