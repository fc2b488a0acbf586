//! Restores: bucket archives back into any S3-compatible server, volume archives into a directory.
//!
//! Every restore first proves the artifact: its SHA-256 must equal the run record's (and the object
//! index's too), so a damaged backup is refused before anything is written. Bucket restores then
//! stream the archive on a blocking thread, pairing each tar entry with its index line (same order),
//! and upload on the async side: small objects concurrently with PutObject, large ones with a
//! multipart upload (aborted on error), each with its content type, content headers and user
//! metadata. `--verify` reads every object back and compares its SHA-256.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::catalog::{ArtifactKind, ArtifactRecord, Catalog, RunId};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ops::archive::{IndexEntry, INDEX_ENTRY};
use crate::ops::verify::open_plain;
use crate::s3::s3_error;
use crate::sink::local::BackupDir;

/// Objects above this size are uploaded in parts of this size.
pub const PART_SIZE: usize = 8 << 20;
const CHUNK: usize = 1 << 20;

/// Which backup to restore.
#[derive(Debug, Clone)]
pub enum Selector {
    Latest,
    Run(RunId),
    File(PathBuf),
}

impl Selector {
    /// `latest`, a run id, or a file (a bare name is looked up in the backup directory).
    pub fn parse(s: &str) -> Selector {
        if s == "latest" {
            return Selector::Latest;
        }
        match RunId::try_from(s.to_string()) {
            Ok(id) => Selector::Run(id),
            Err(_) => Selector::File(PathBuf::from(s)),
        }
    }
}

/// Finds the verified artifacts of `kind` that `sel` names.
pub fn resolve(dir: &BackupDir, kind: ArtifactKind, sel: &Selector) -> Result<Vec<ArtifactRecord>> {
    let catalog = Catalog::new(dir.clone());
    let arts: Vec<ArtifactRecord> = match sel {
        Selector::Latest => catalog
            .latest_with(kind)?
            .good_artifacts(kind)
            .cloned()
            .collect(),
        Selector::Run(id) => {
            let r = catalog.load(id)?;
            if !r.has_good_artifacts() {
                return Err(Error::NotFound(format!(
                    "run {id} has status {}: it holds no backup to restore",
                    r.status
                )));
            }
            r.good_artifacts(kind).cloned().collect()
        }
        Selector::File(p) => {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Usage(format!("{} is not a file name", p.display())))?;
            match catalog.find_file(name)? {
                Some((r, a)) if r.has_good_artifacts() && a.verification.ok && a.kind == kind => {
                    vec![a]
                }
                Some((r, a)) if a.kind != kind => {
                    return Err(Error::Usage(format!(
                        "{name} (run {}) is a {} backup, not a {kind} backup",
                        r.run_id, a.kind
                    )))
                }
                Some((r, _)) => {
                    return Err(Error::NotFound(format!(
                        "{name} belongs to run {} whose status is {}: it is not a verified backup",
                        r.run_id, r.status
                    )))
                }
                None => {
                    return Err(Error::NotFound(format!(
                        "no run record in {} names {name}: stackback cannot prove it complete",
                        dir.path().display()
                    )))
                }
            }
        }
    };
    if arts.is_empty() {
        return Err(Error::NotFound(format!(
            "the selected run holds no verified {kind} backup"
        )));
    }
    Ok(arts)
}

/// Checks the stored SHA-256 of an artifact (and its index) against the run record.
pub fn check_stored(dir: &Path, a: &ArtifactRecord) -> Result<()> {
    let check = |file: &str, want: &str| -> Result<()> {
        let path = dir.join(file);
        let mut f = std::fs::File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::io("cannot read", &path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        if got != want {
            return Err(Error::Verification(format!(
                "{file}: sha256 is {got}, the run record says {want}; refusing to restore a damaged backup"
            )));
        }
        Ok(())
    };
    check(&a.file, &a.stored_sha256)?;
    if let (Some(i), Some(sha)) = (&a.index_file, &a.index_sha256) {
        check(i, sha)?;
    }
    Ok(())
}

/// What to do with objects that already exist in the target bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse to start when the target (under the prefix) holds any object.
    Refuse,
    Overwrite,
    Skip,
}

#[derive(Debug, Clone)]
pub struct ObjectRestoreOptions {
    /// Target bucket (default: the bucket the archive came from).
    pub bucket: Option<String>,
    /// Target endpoint (default: MINIO_ENDPOINT).
    pub endpoint: Option<String>,
    /// Only restore keys that start with this.
    pub prefix: Option<String>,
    pub existing: Existing,
    pub create_bucket: bool,
    pub verify: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ObjectRestoreReport {
    pub artifact: String,
    pub bucket: String,
    pub uploaded: u64,
    pub skipped_existing: u64,
    pub bytes: u64,
    /// Objects read back and matched, with `--verify`.
    pub verified: Option<u64>,
    pub seconds: f64,
}

enum Body {
    Full(Bytes),
    Stream(mpsc::Receiver<std::io::Result<Bytes>>),
}

struct Item {
    meta: IndexEntry,
    body: Body,
}

/// Restores every bucket archive `sel` names.
pub async fn restore_objects(
    cfg: &Config,
    sel: &Selector,
    opts: &ObjectRestoreOptions,
) -> Result<Vec<ObjectRestoreReport>> {
    let dir = BackupDir::open(&cfg.backup.dir)?;
    let arts = resolve(&dir, ArtifactKind::Objects, sel)?;
    if opts.bucket.is_some() && arts.len() > 1 {
        return Err(Error::Usage(format!(
            "the run holds {} bucket archives; --bucket needs one: name the archive file instead",
            arts.len()
        )));
    }
    let client = crate::s3::client(&cfg.objects, opts.endpoint.as_deref())?;
    let mut reports = Vec::new();
    for a in arts {
        reports.push(restore_one(cfg, &dir, &client, &a, opts).await?);
    }
    Ok(reports)
}

async fn restore_one(
    cfg: &Config,
    dir: &BackupDir,
    client: &Client,
    a: &ArtifactRecord,
    opts: &ObjectRestoreOptions,
) -> Result<ObjectRestoreReport> {
    let t0 = Instant::now();
    let bucket = opts.bucket.clone().unwrap_or_else(|| a.source.clone());
    {
        let (d, a) = (dir.path().to_path_buf(), a.clone());
        tokio::task::spawn_blocking(move || check_stored(&d, &a))
            .await
            .map_err(|e| Error::Step {
                what: "checking the archive".into(),
                detail: e.to_string(),
            })??;
    }
    prepare_bucket(client, &bucket, opts).await?;
    let index_file = a.index_file.as_ref().map(|f| dir.join(f)).ok_or_else(|| {
        Error::NotFound(format!(
            "{} has no object index recorded: cannot restore it object by object",
            a.file
        ))
    })?;
    tracing::info!(archive = %a.file, bucket = %bucket, "restoring objects");

    let (tx, mut rx) = mpsc::channel::<Item>(cfg.objects.concurrency.max(2));
    let archive = dir.join(&a.file);
    let compression = a.compression;
    let prefix = opts.prefix.clone();
    let idx = index_file.clone();
    let reader = tokio::task::spawn_blocking(move || {
        read_archive(&archive, compression, &idx, prefix.as_deref(), tx)
    });

    let mut report = ObjectRestoreReport {
        artifact: a.file.clone(),
        bucket: bucket.clone(),
        ..Default::default()
    };
    let mut puts: JoinSet<Result<bool>> = JoinSet::new();
    let mut upload_error: Option<Error> = None;
    while let Some(item) = rx.recv().await {
        report.bytes += item.meta.size;
        match item.body {
            Body::Full(bytes) => {
                while puts.len() >= cfg.objects.concurrency {
                    if let Err(e) = count(puts.join_next().await, &mut report) {
                        upload_error = Some(e);
                        break;
                    }
                }
                if upload_error.is_some() {
                    break;
                }
                let (c, b, skip) = (
                    client.clone(),
                    bucket.clone(),
                    opts.existing == Existing::Skip,
                );
                puts.spawn(async move { put_small(&c, &b, item.meta, bytes, skip).await });
            }
            Body::Stream(chunks) => {
                match put_large(
                    client,
                    &bucket,
                    &item.meta,
                    chunks,
                    opts.existing == Existing::Skip,
                )
                .await
                {
                    Ok(uploaded) => tally(uploaded, &mut report),
                    Err(e) => {
                        upload_error = Some(e);
                        break;
                    }
                }
            }
        }
    }
    drop(rx);
    while let Some(r) = puts.join_next().await {
        if let Err(e) = count(Some(r), &mut report) {
            upload_error.get_or_insert(e);
        }
    }
    let read = reader.await.map_err(|e| Error::Step {
        what: "reading the archive".into(),
        detail: e.to_string(),
    })?;
    if let Some(e) = upload_error {
        return Err(e);
    }
    read?;
    if opts.verify {
        report.verified = Some(
            verify_bucket(
                client,
                &bucket,
                &index_file,
                opts.prefix.as_deref(),
                cfg.objects.concurrency,
            )
            .await?,
        );
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

fn tally(uploaded: bool, report: &mut ObjectRestoreReport) {
    if uploaded {
        report.uploaded += 1;
    } else {
        report.skipped_existing += 1;
    }
}

fn count(
    joined: Option<std::result::Result<Result<bool>, tokio::task::JoinError>>,
    report: &mut ObjectRestoreReport,
) -> Result<()> {
    match joined {
        None => Ok(()),
        Some(Ok(Ok(uploaded))) => {
            tally(uploaded, report);
            Ok(())
        }
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(Error::Step {
            what: "uploading".into(),
            detail: e.to_string(),
        }),
    }
}

/// Creates the bucket when asked, and refuses a non-empty target unless told what to do.
async fn prepare_bucket(client: &Client, bucket: &str, opts: &ObjectRestoreOptions) -> Result<()> {
    if let Err(e) = crate::source::bucket::check_bucket(client, bucket).await {
        let missing = matches!(&e, Error::S3 { detail, .. } if detail.contains("NoSuchBucket"));
        if !(missing && opts.create_bucket) {
            if missing {
                return Err(Error::S3 {
                    op: "HeadBucket",
                    bucket: bucket.to_string(),
                    detail: "NoSuchBucket: the target bucket does not exist; add --create-bucket to create it".into(),
                });
            }
            return Err(e);
        }
        client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| s3_error("CreateBucket", bucket, e))?;
        tracing::info!(bucket, "created the target bucket");
        return Ok(());
    }
    if opts.existing == Existing::Refuse {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_prefix(opts.prefix.clone())
            .max_keys(1)
            .send()
            .await
            .map_err(|e| s3_error("ListObjectsV2", bucket, e))?;
        if let Some(k) = page.contents().first().and_then(|o| o.key()) {
            return Err(Error::Usage(format!(
                "bucket {bucket} is not empty (it holds {k:?}, maybe more): add --overwrite to replace objects with the backup's, or --skip-existing to keep the ones there"
            )));
        }
    }
    Ok(())
}

async fn exists(client: &Client, bucket: &str, key: &str) -> Result<bool> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
        Err(e) => Err(s3_error("HeadObject", bucket, e)),
    }
}

macro_rules! with_headers {
    ($req:expr, $m:expr) => {
        $req.set_content_type($m.content_type.clone())
            .set_content_encoding($m.content_encoding.clone())
            .set_content_disposition($m.content_disposition.clone())
            .set_content_language($m.content_language.clone())
            .set_cache_control($m.cache_control.clone())
            .set_metadata(if $m.metadata.is_empty() {
                None
            } else {
                Some($m.metadata.clone().into_iter().collect())
            })
    };
}

/// Returns false when the object was skipped because it exists.
async fn put_small(
    client: &Client,
    bucket: &str,
    m: IndexEntry,
    body: Bytes,
    skip_existing: bool,
) -> Result<bool> {
    if skip_existing && exists(client, bucket, &m.key).await? {
        return Ok(false);
    }
    let req = client
        .put_object()
        .bucket(bucket)
        .key(&m.key)
        .body(ByteStream::from(body));
    with_headers!(req, m)
        .send()
        .await
        .map_err(|e| key_error(s3_error("PutObject", bucket, e), &m.key))?;
    Ok(true)
}

fn key_error(mut e: Error, key: &str) -> Error {
    if let Error::S3 { detail, .. } = &mut e {
        *detail = format!("key {key:?}: {detail}");
    }
    e
}

async fn put_large(
    client: &Client,
    bucket: &str,
    m: &IndexEntry,
    mut chunks: mpsc::Receiver<std::io::Result<Bytes>>,
    skip_existing: bool,
) -> Result<bool> {
    if skip_existing && exists(client, bucket, &m.key).await? {
        // Drain so the reader thread moves on to the next entry.
        while chunks.recv().await.is_some() {}
        return Ok(false);
    }
    let req = client.create_multipart_upload().bucket(bucket).key(&m.key);
    let created = with_headers!(req, m)
        .send()
        .await
        .map_err(|e| key_error(s3_error("CreateMultipartUpload", bucket, e), &m.key))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let result = async {
        let mut parts = Vec::new();
        let mut buf = BytesMut::with_capacity(PART_SIZE);
        let mut done = false;
        while !done {
            match chunks.recv().await {
                Some(Ok(c)) => buf.extend_from_slice(&c),
                Some(Err(e)) => {
                    return Err(Error::Step {
                        what: format!("reading object {:?} from the archive", m.key),
                        detail: e.to_string(),
                    })
                }
                None => done = true,
            }
            if buf.len() >= PART_SIZE || (done && (!buf.is_empty() || parts.is_empty())) {
                let n = parts.len() as i32 + 1;
                let body = buf.split().freeze();
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(&m.key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(|e| key_error(s3_error("UploadPart", bucket, e), &m.key))?;
                parts.push(
                    CompletedPart::builder()
                        .set_e_tag(out.e_tag().map(String::from))
                        .part_number(n)
                        .build(),
                );
            }
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(&m.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| key_error(s3_error("CompleteMultipartUpload", bucket, e), &m.key))?;
        Ok(true)
    }
    .await;
    if result.is_err() {
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(&m.key)
            .upload_id(&upload_id)
            .send()
            .await;
    }
    result
}

/// The blocking side: decompress, walk tar entries and index lines together, check each object's
/// SHA-256 as it is read, and hand objects to the uploader.
fn read_archive(
    archive: &Path,
    compression: crate::pipeline::Compression,
    index: &Path,
    prefix: Option<&str>,
    tx: mpsc::Sender<Item>,
) -> Result<()> {
    let plain = open_plain(archive, compression)?;
    let mut lines =
        BufReader::new(std::fs::File::open(index).map_err(|e| Error::io("cannot open", index, e))?)
            .lines();
    let mut tar = tar::Archive::new(plain);
    let bad = |detail: String| Error::Verification(format!("{}: {detail}", archive.display()));
    for entry in tar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("unreadable entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if path == INDEX_ENTRY {
            break;
        }
        let line = lines
            .next()
            .ok_or_else(|| bad(format!("entry {path:?} is not in the object index")))?
            .map_err(|e| Error::io("cannot read", index, e))?;
        let meta: IndexEntry =
            serde_json::from_str(&line).map_err(|e| bad(format!("bad index line: {e}")))?;
        if meta.path != path {
            return Err(bad(format!(
                "entry {path:?} does not match the index ({:?})",
                meta.path
            )));
        }
        if prefix.is_some_and(|p| !meta.key.starts_with(p)) {
            continue;
        }
        let mut hasher = Sha256::new();
        let sha_mismatch = |h: Sha256, m: &IndexEntry| {
            let got = hex::encode(h.finalize());
            (got != m.sha256).then(|| {
                format!(
                    "object {:?}: sha256 {got}, the index says {}",
                    m.key, m.sha256
                )
            })
        };
        if meta.size as usize <= PART_SIZE {
            let mut data = Vec::with_capacity(meta.size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("entry {path:?}: {e}")))?;
            hasher.update(&data);
            if let Some(m) = sha_mismatch(hasher, &meta) {
                return Err(bad(m));
            }
            if tx
                .blocking_send(Item {
                    meta,
                    body: Body::Full(Bytes::from(data)),
                })
                .is_err()
            {
                return Ok(());
            }
        } else {
            let (ctx, crx) = mpsc::channel(4);
            let m = meta.clone();
            if tx
                .blocking_send(Item {
                    meta,
                    body: Body::Stream(crx),
                })
                .is_err()
            {
                return Ok(());
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| bad(format!("entry {path:?}: {e}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                if ctx
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    return Ok(());
                }
            }
            if let Some(msg) = sha_mismatch(hasher, &m) {
                // The multipart upload sees the error and aborts: no damaged object is completed.
                let _ = ctx.blocking_send(Err(std::io::Error::other(msg.clone())));
                return Err(bad(msg));
            }
        }
    }
    Ok(())
}

/// Reads every restored object back and compares its SHA-256 with the index.
async fn verify_bucket(
    client: &Client,
    bucket: &str,
    index: &Path,
    prefix: Option<&str>,
    concurrency: usize,
) -> Result<u64> {
    let text = tokio::fs::read(index)
        .await
        .map_err(|e| Error::io("cannot read", index, e))?;
    let entries = crate::ops::archive::parse_index(&text).map_err(Error::Verification)?;
    let mut set: JoinSet<Result<()>> = JoinSet::new();
    let mut checked = 0u64;
    for m in entries
        .into_iter()
        .filter(|m| prefix.is_none_or(|p| m.key.starts_with(p)))
    {
        while set.len() >= concurrency {
            join_verify(set.join_next().await)?;
        }
        let (c, b) = (client.clone(), bucket.to_string());
        set.spawn(async move {
            let out = c
                .get_object()
                .bucket(&b)
                .key(&m.key)
                .send()
                .await
                .map_err(|e| key_error(s3_error("GetObject", &b, e), &m.key))?;
            let mut body = out.body;
            let mut h = Sha256::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::S3 {
                    op: "GetObject",
                    bucket: b.clone(),
                    detail: e.to_string(),
                })?;
                h.update(&chunk);
            }
            let got = hex::encode(h.finalize());
            if got != m.sha256 {
                return Err(Error::Verification(format!(
                    "object {:?} in bucket {b} reads back with sha256 {got}, expected {}",
                    m.key, m.sha256
                )));
            }
            Ok(())
        });
        checked += 1;
    }
    while let Some(r) = set.join_next().await {
        join_verify(Some(r))?;
    }
    Ok(checked)
}

fn join_verify(r: Option<std::result::Result<Result<()>, tokio::task::JoinError>>) -> Result<()> {
    match r {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(Error::Step {
            what: "verifying".into(),
            detail: e.to_string(),
        }),
    }
}

#[derive(Debug, Clone)]
pub struct VolumeRestoreReport {
    pub artifact: String,
    pub into: PathBuf,
    pub entries: u64,
}

/// Extracts a volume archive into `into` (never outside it). Refuses a non-empty `into` unless
/// `force`.
pub fn restore_volume(
    cfg: &Config,
    sel: &Selector,
    into: &Path,
    force: bool,
) -> Result<VolumeRestoreReport> {
    let dir = BackupDir::open(&cfg.backup.dir)?;
    let arts = resolve(&dir, ArtifactKind::Volume, sel)?;
    let a = arts
        .into_iter()
        .next()
        .expect("resolve returns at least one artifact");
    if into.exists() {
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
    } else {
        std::fs::create_dir_all(into).map_err(|e| Error::io("cannot create", into, e))?;
    }
    check_stored(dir.path(), &a)?;
    let plain = open_plain(&dir.join(&a.file), a.compression)?;
    let mut tar = tar::Archive::new(plain);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    let mut entries = 0u64;
    for entry in tar
        .entries()
        .map_err(|e| Error::io("cannot read", dir.join(&a.file), e))?
    {
        let mut entry = entry.map_err(|e| Error::io("cannot read", dir.join(&a.file), e))?;
        // unpack_in refuses absolute paths, `..` and writes through symlinks that leave `into`.
        let inside = entry
            .unpack_in(into)
            .map_err(|e| Error::io("cannot extract into", into, e))?;
        if !inside {
            return Err(Error::Verification(format!(
                "{} holds an entry that points outside the target directory; refusing it",
                a.file
            )));
        }
        entries += 1;
    }
    Ok(VolumeRestoreReport {
        artifact: a.file,
        into: into.to_path_buf(),
        entries,
    })
}

#[derive(Debug, Clone, Default)]
pub struct DbRestoreOptions {
    /// Database to restore into (default: the one the backup came from).
    pub target_db: Option<String>,
    /// Another server: `postgres://user:pass@host:port/db`.
    pub target_url: Option<String>,
    /// Create the target database when it does not exist.
    pub create: bool,
    /// Drop and recreate a target that already holds tables (needs `yes`).
    pub clean: bool,
    pub yes: bool,
    /// Leave out `ALTER ... OWNER TO` statements (a fresh server without the original roles).
    pub no_owner: bool,
    /// Write the plain SQL here instead of restoring.
    pub to_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct DbRestoreReport {
    pub artifact: String,
    /// The database restored into, or the file written.
    pub target: String,
    pub tables: u64,
    pub rows: u64,
    pub plain_bytes: u64,
    pub seconds: f64,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn connect(pg: &crate::config::PostgresConfig, db: &str) -> Result<tokio_postgres::Client> {
    let mut pc = tokio_postgres::Config::new();
    pc.host(&pg.host)
        .port(pg.port)
        .user(&pg.user)
        .dbname(db)
        .application_name("stackback")
        .connect_timeout(std::time::Duration::from_secs(15));
    if let Some(p) = &pg.password {
        pc.password(p.expose());
    }
    let (client, conn) = pc
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::Step {
            what: format!("connecting to database {db} on {}:{}", pg.host, pg.port),
            detail: e.to_string(),
        })?;
    tokio::spawn(conn);
    Ok(client)
}

fn sql_err(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::Step {
        what: what.to_string(),
        detail: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string()),
    }
}

/// Restores a database backup: into a database (through psql, one transaction, ON_ERROR_STOP),
/// or into a plain SQL file.
pub async fn restore_db(
    cfg: &Config,
    sel: &Selector,
    opts: &DbRestoreOptions,
) -> Result<DbRestoreReport> {
    let t0 = Instant::now();
    let dir = BackupDir::open(&cfg.backup.dir)?;
    let a = resolve(&dir, ArtifactKind::Database, sel)?
        .into_iter()
        .next()
        .expect("resolve returns at least one artifact");
    {
        let (d, a) = (dir.path().to_path_buf(), a.clone());
        tokio::task::spawn_blocking(move || check_stored(&d, &a))
            .await
            .map_err(|e| Error::Step {
                what: "checking the backup".into(),
                detail: e.to_string(),
            })??;
    }
    let archive = dir.join(&a.file);
    if let Some(out) = &opts.to_file {
        let (archive, out2, compression) = (archive.clone(), out.clone(), a.compression);
        let plain_bytes =
            tokio::task::spawn_blocking(move || write_plain(&archive, compression, &out2))
                .await
                .map_err(|e| Error::Step {
                    what: "writing SQL".into(),
                    detail: e.to_string(),
                })??;
        return Ok(DbRestoreReport {
            artifact: a.file,
            target: out.display().to_string(),
            plain_bytes,
            seconds: t0.elapsed().as_secs_f64(),
            ..Default::default()
        });
    }

    let mut pg = match &opts.target_url {
        Some(u) => cfg.postgres.with_url(u)?,
        None => cfg.postgres.clone(),
    };
    pg.db = opts
        .target_db
        .clone()
        .or_else(|| opts.target_url.as_ref().map(|_| pg.db.clone()))
        .unwrap_or_else(|| a.source.clone());
    let db = pg.db.clone();

    let admin = connect(&pg, "postgres").await?;
    let exists = !admin
        .query("select 1 from pg_database where datname = $1", &[&db])
        .await
        .map_err(sql_err("looking up the target database"))?
        .is_empty();
    let server_num: i32 = admin
        .query_one("select current_setting('server_version_num')::int", &[])
        .await
        .map_err(sql_err("asking the server its version"))?
        .get(0);
    if exists {
        let target = connect(&pg, &db).await?;
        let tables: i64 = target
            .query_one(
                "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
                &[],
            )
            .await
            .map_err(sql_err("counting tables in the target"))?
            .get(0);
        drop(target);
        if tables > 0 {
            if !(opts.clean && opts.yes) {
                return Err(Error::Usage(format!(
                    "database {db} already has {tables} tables: refusing to restore over them; add --clean --yes to drop and recreate it, or choose another --target-db"
                )));
            }
            let force = if server_num >= 130000 {
                " WITH (FORCE)"
            } else {
                ""
            };
            admin
                .batch_execute(&format!("DROP DATABASE {}{force}", quote_ident(&db)))
                .await
                .map_err(sql_err("dropping the target database"))?;
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE {} TEMPLATE template0",
                    quote_ident(&db)
                ))
                .await
                .map_err(sql_err("recreating the target database"))?;
            tracing::info!(db = %db, "dropped and recreated the target database");
        }
    } else if opts.create {
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&db)
            ))
            .await
            .map_err(sql_err("creating the target database"))?;
    } else {
        return Err(Error::NotFound(format!(
            "database {db} does not exist on {}:{}: add --create to create it",
            pg.host, pg.port
        )));
    }
    drop(admin);

    let search = crate::source::postgres::ToolSearch::system(cfg.postgres.pg_dump.clone());
    let tools = search.tools("psql").await?;
    let psql =
        crate::source::postgres::select_tool("psql", &tools, Some((server_num / 10000) as u32))?
            .clone();
    tracing::info!(artifact = %a.file, db = %db, psql = %psql.path.display(), "restoring database");
    let (compression, no_owner, redactor) = (a.compression, opts.no_owner, cfg.redactor());
    let pg2 = pg.clone();
    let plain_bytes = tokio::task::spawn_blocking(move || {
        feed_psql(&psql.path, &pg2, &archive, compression, no_owner, &redactor)
    })
    .await
    .map_err(|e| Error::Step {
        what: "restoring".into(),
        detail: e.to_string(),
    })??;

    let target = connect(&pg, &db).await?;
    let tables = target
        .query(
            "select format('%I.%I', schemaname, tablename) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .map_err(sql_err("listing restored tables"))?;
    let mut rows = 0u64;
    for t in &tables {
        let name: String = t.get(0);
        let n: i64 = target
            .query_one(&format!("select count(*) from {name}"), &[])
            .await
            .map_err(sql_err("counting restored rows"))?
            .get(0);
        rows += n as u64;
    }
    Ok(DbRestoreReport {
        artifact: a.file,
        target: db,
        tables: tables.len() as u64,
        rows,
        plain_bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Decompresses into `out` atomically (temp name, fsync, rename), mode 0600.
fn write_plain(
    archive: &Path,
    compression: crate::pipeline::Compression,
    out: &Path,
) -> Result<u64> {
    use std::io::Write;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".stackback-tmp.")
        .tempfile_in(parent)
        .map_err(|e| Error::io("cannot create a temp file in", parent, e))?;
    let mut plain = open_plain(archive, compression)?;
    let n = std::io::copy(&mut plain, tmp.as_file_mut())
        .map_err(|e| Error::io("cannot write", out, e))?;
    tmp.as_file_mut()
        .flush()
        .map_err(|e| Error::io("cannot write", out, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("cannot fsync", out, e))?;
    tmp.persist(out)
        .map_err(|e| Error::io("cannot write", out, e.error))?;
    Ok(n)
}

/// Streams the dump into psql's stdin; psql's exit status decides.
fn feed_psql(
    psql: &Path,
    pg: &crate::config::PostgresConfig,
    archive: &Path,
    compression: crate::pipeline::Compression,
    no_owner: bool,
    redactor: &crate::config::Redactor,
) -> Result<u64> {
    use std::io::{BufWriter, Write};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(psql);
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--no-password",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (k, v) in crate::source::postgres::pg_env(pg, &pg.db) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| Error::Child {
        tool: "psql".into(),
        status: "could not start".into(),
        stderr: e.to_string(),
    })?;
    let mut stderr = child.stderr.take().expect("piped");
    let drain = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut plain = BufReader::with_capacity(256 * 1024, open_plain(archive, compression)?);
    let mut stdin = BufWriter::with_capacity(256 * 1024, child.stdin.take().expect("piped"));
    let mut line = Vec::new();
    let mut in_copy = false;
    let mut total = 0u64;
    let fed: std::io::Result<()> = (|| {
        loop {
            line.clear();
            let n = plain.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if in_copy {
                in_copy = line.as_slice() != b"\\.\n";
            } else if line.starts_with(b"COPY ") && line.ends_with(b"FROM stdin;\n") {
                in_copy = true;
            } else if no_owner
                && line.starts_with(b"ALTER ")
                && line.windows(10).any(|w| w == b" OWNER TO ")
            {
                continue;
            }
            stdin.write_all(&line)?;
        }
        stdin.flush()
    })();
    if fed.is_err() {
        // psql commits its single transaction at end of input: kill it so a dump we could not read
        // to the end is never committed half-way.
        let _ = child.kill();
    }
    drop(stdin);
    let status = child.wait().map_err(|e| Error::Child {
        tool: "psql".into(),
        status: "could not be waited for".into(),
        stderr: e.to_string(),
    })?;
    let err_text = redactor.redact(drain.join().unwrap_or_default().trim());
    if let Err(e) = &fed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Error::Verification(format!(
                "{} could not be read to the end ({e}); psql was stopped, nothing was committed",
                archive.display()
            )));
        }
    }
    if !status.success() {
        return Err(Error::Child {
            tool: "psql".into(),
            status: status
                .code()
                .map_or("killed by a signal".into(), |c| format!("exit code {c}")),
            stderr: format!(
                "{err_text} (the restore ran in one transaction: nothing was committed)"
            ),
        });
    }
    fed.map_err(|e| Error::io("cannot read", archive, e))?;
    Ok(total)
}
