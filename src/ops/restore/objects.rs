//! Bucket archives back into any S3-compatible server.
//!
//! The archive is streamed on a blocking thread, pairing each tar entry with its index line (same
//! order) and checking each object's sum as it is read (BLAKE3, or SHA-256 for indexes written
//! before BLAKE3; see [`ObjectHasher`]); objects are uploaded on the async side: small ones
//! concurrently with PutObject, large ones with a multipart upload (aborted on error), each with
//! its content type, content headers and user metadata. `--verify` reads every object back and
//! compares its sum.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Instant;

use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::archive::{parse_index, IndexEntry, ObjectHasher, INDEX_ENTRY};
use crate::catalog::{ArtifactKind, ArtifactRecord};
use crate::config::Config;
use crate::error::{Checksum, Error, Problem, Result, S3ErrorKind};
use crate::ops::verify::CheckError;
use crate::ops::Selector;
use crate::s3::upload::{put_large, put_small, read_back, PART_SIZE};
use crate::s3::{check_bucket, s3_error};
use crate::sink::local::BackupDir;

const CHUNK: usize = 1 << 20;

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
    let objects = cfg.objects()?;
    let dir = BackupDir::open(&cfg.backup_dir())?;
    let arts = super::proven(cfg, &dir, ArtifactKind::Objects, sel).await?;
    if opts.bucket.is_some() && arts.len() > 1 {
        return Err(Error::Usage(format!(
            "the run holds {} bucket archives; --bucket needs one: name the archive file instead",
            arts.len()
        )));
    }
    let client = crate::s3::client(objects, opts.endpoint.as_deref())?;
    let mut reports = Vec::new();
    let filter = match &opts.prefix {
        Some(p) => KeyFilter::Prefix(p.clone()),
        None => KeyFilter::All,
    };
    for (a, stored) in arts {
        reports.push(
            restore_one(
                objects.concurrency,
                &dir,
                &client,
                (&a, &stored),
                opts,
                &filter,
            )
            .await?,
        );
    }
    Ok(reports)
}

/// Which objects of an archive a restore uploads.
#[derive(Debug, Clone)]
pub(crate) enum KeyFilter {
    All,
    Prefix(String),
    /// Exactly these keys (a restore test's sample).
    Keys(std::sync::Arc<std::collections::HashSet<String>>),
}

impl KeyFilter {
    fn keeps(&self, key: &str) -> bool {
        match self {
            KeyFilter::All => true,
            KeyFilter::Prefix(p) => key.starts_with(p.as_str()),
            KeyFilter::Keys(k) => k.contains(key),
        }
    }
}

/// Restores one proven archive `a` into `opts.bucket` (else its own bucket): the objects
/// `filter` keeps.
pub(crate) async fn restore_one(
    concurrency: usize,
    dir: &BackupDir,
    client: &Client,
    (a, stored): (&ArtifactRecord, &super::Stored),
    opts: &ObjectRestoreOptions,
    filter: &KeyFilter,
) -> Result<ObjectRestoreReport> {
    let t0 = Instant::now();
    let bucket = opts.bucket.clone().unwrap_or_else(|| a.source.clone());
    prepare_bucket(client, &bucket, opts).await?;
    let index = {
        let (d, a, st) = (dir.path().to_path_buf(), a.clone(), stored.clone());
        crate::ops::blocking("reading the object index", move || {
            usable_index(&d, &a, &st)
        })
        .await?
    };
    let index_file = index.path().to_path_buf();
    tracing::info!(archive = %a.file, bucket = %bucket, "restoring objects");

    let (tx, rx) = mpsc::channel::<Item>(concurrency.max(2));
    let archive = dir.join(&a.file);
    let st = stored.clone();
    let filter = filter.clone();
    let idx = index_file.clone();
    let reader =
        tokio::task::spawn_blocking(move || read_archive(&archive, &st, &idx, &filter, tx));

    let mut report = ObjectRestoreReport {
        artifact: a.file.clone(),
        bucket: bucket.clone(),
        ..Default::default()
    };
    let upload_error = upload_all(
        client,
        &bucket,
        opts.existing == Existing::Skip,
        concurrency,
        rx,
        &mut report,
    )
    .await
    .err();
    let read = reader
        .await
        .map_err(|e| Error::step("reading the archive", e))?;
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
                concurrency,
            )
            .await?,
        );
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// An object index that matches the run record: the sidecar, or else the copy inside the archive
/// (written to a private temp file), so a damaged sidecar never stops a restore. A sealed sidecar
/// is decrypted into such a temp file too (mode 0600, removed when the restore ends).
pub(crate) enum Index {
    Sidecar(std::path::PathBuf),
    Extracted(tempfile::NamedTempFile),
}

impl Index {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Index::Sidecar(p) => p,
            Index::Extracted(t) => t.path(),
        }
    }
}

pub(crate) fn usable_index(
    dir: &Path,
    a: &ArtifactRecord,
    stored: &super::Stored,
) -> Result<Index> {
    let (Some(file), Some(sha)) = (&a.index_file, &a.index_sha256) else {
        return Err(Error::NotFound(format!(
            "{} has no object index recorded: cannot restore it object by object",
            a.file
        )));
    };
    let sidecar = dir.join(file);
    let problem = match crate::ops::verify::check_sidecar(&sidecar, a, stored.ids.as_deref()) {
        Ok(()) if !a.sealed() => return Ok(Index::Sidecar(sidecar)),
        Ok(()) => match decrypt_index(&sidecar, stored, sha) {
            Ok(i) => return Ok(i),
            Err(p) => p,
        },
        Err(CheckError::Bad(p)) => p,
        Err(CheckError::Key(detail)) => {
            return Err(Error::Key {
                file: sidecar.display().to_string(),
                detail,
            })
        }
    };
    tracing::warn!(index = %sidecar.display(), problem = %problem, "the index beside the archive is unusable: using the copy inside the archive");
    let archive = dir.join(&a.file);
    let bad = |p: Problem| Error::verification(archive.display(), p);
    let plain = stored.open(&archive)?;
    let mut tar = tar::Archive::new(plain);
    let mut out = private_temp()?;
    for entry in tar
        .entries()
        .map_err(|e| bad(Problem::undecodable(format!("not a tar archive: {e}"))))?
    {
        let mut entry =
            entry.map_err(|e| bad(Problem::undecodable(format!("unreadable entry: {e}"))))?;
        if entry.path().is_ok_and(|p| p == Path::new(INDEX_ENTRY)) {
            let mut w = crate::pipeline::HashWriter::new(out.as_file_mut());
            std::io::copy(&mut entry, &mut w).map_err(|e| {
                bad(Problem::undecodable(format!(
                    "object index unreadable: {e}"
                )))
            })?;
            let (_, _, got) = w.finish();
            if &got != sha {
                return Err(bad(Problem::ChecksumMismatch {
                    what: Checksum::Index,
                    actual: got,
                    recorded: sha.clone(),
                }));
            }
            return Ok(Index::Extracted(out));
        }
    }
    Err(bad(problem))
}

fn private_temp() -> Result<tempfile::NamedTempFile> {
    tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("cannot create a temp file in", std::env::temp_dir(), e))
}

/// Decrypts a sealed index (already proven by its checksums) into a private temp file.
fn decrypt_index(
    sidecar: &Path,
    stored: &super::Stored,
    sha: &str,
) -> std::result::Result<Index, Problem> {
    let undecodable = |e: String| Problem::undecodable(format!("sealed object index: {e}"));
    let ids = stored
        .ids
        .as_deref()
        .ok_or_else(|| undecodable("no identity".into()))?;
    let f = std::fs::File::open(sidecar).map_err(|e| undecodable(e.to_string()))?;
    let mut plain = crate::crypt::unseal(f, ids).map_err(|e| undecodable(e.to_string()))?;
    let mut out = private_temp().map_err(|e| undecodable(e.to_string()))?;
    let mut w = crate::pipeline::HashWriter::new(out.as_file_mut());
    std::io::copy(&mut plain, &mut w).map_err(|e| undecodable(e.to_string()))?;
    let (_, _, got) = w.finish();
    if got != sha {
        return Err(Problem::ChecksumMismatch {
            what: Checksum::Index,
            actual: got,
            recorded: sha.to_string(),
        });
    }
    Ok(Index::Extracted(out))
}

/// Uploads the objects the archive reader sends: small ones `concurrency` at a time, large ones
/// one by one as they stream. Stops at the first error, after the uploads in flight ended.
async fn upload_all(
    client: &Client,
    bucket: &str,
    skip: bool,
    concurrency: usize,
    mut rx: mpsc::Receiver<Item>,
    report: &mut ObjectRestoreReport,
) -> Result<()> {
    let mut puts: JoinSet<Result<bool>> = JoinSet::new();
    let mut upload_error: Option<Error> = None;
    while let Some(item) = rx.recv().await {
        report.bytes += item.meta.size;
        match item.body {
            Body::Full(bytes) => {
                while puts.len() >= concurrency && upload_error.is_none() {
                    upload_error = count(puts.join_next().await, report).err();
                }
                if upload_error.is_some() {
                    break;
                }
                let (c, b) = (client.clone(), bucket.to_string());
                puts.spawn(async move { put_small(&c, &b, item.meta, bytes, skip).await });
            }
            Body::Stream(chunks) => match put_large(client, bucket, &item.meta, chunks, skip).await
            {
                Ok(uploaded) => tally(uploaded, report),
                Err(e) => {
                    upload_error = Some(e);
                    break;
                }
            },
        }
    }
    drop(rx);
    while let Some(r) = puts.join_next().await {
        if let Err(e) = count(Some(r), report) {
            upload_error.get_or_insert(e);
        }
    }
    upload_error.map_or(Ok(()), Err)
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
        Some(Err(e)) => Err(Error::step("uploading", e)),
    }
}

/// Creates the bucket when asked, and refuses a non-empty target unless told what to do.
async fn prepare_bucket(client: &Client, bucket: &str, opts: &ObjectRestoreOptions) -> Result<()> {
    if let Err(e) = check_bucket(client, bucket).await {
        if e.s3_kind() != Some(S3ErrorKind::NoSuchBucket) {
            return Err(e);
        }
        if !opts.create_bucket {
            return Err(crate::error::S3Error {
                op: "HeadBucket",
                bucket: bucket.to_string(),
                key: None,
                kind: S3ErrorKind::NoSuchBucket,
                code: None,
                status: Some(404),
                detail: "NoSuchBucket: the target bucket does not exist; add --create-bucket to create it".into(),
            }
            .into());
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

/// The blocking side: decompress, walk tar entries and index lines together, check each object's
/// sum as it is read, and hand objects to the uploader.
fn read_archive(
    archive: &Path,
    stored: &super::Stored,
    index: &Path,
    filter: &KeyFilter,
    tx: mpsc::Sender<Item>,
) -> Result<()> {
    let plain = stored.open(archive)?;
    let mut lines =
        BufReader::new(std::fs::File::open(index).map_err(|e| Error::io("cannot open", index, e))?)
            .lines();
    let mut tar = tar::Archive::new(plain);
    let bad = |detail: String| Error::verification(archive.display(), Problem::index(detail));
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
        if !filter.keeps(&meta.key) {
            continue;
        }
        if !send_entry(&mut entry, meta, &tx, &bad)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends one object to the uploader, whole or in chunks, checking its sum as it is read.
/// Returns false when the uploader stopped listening.
fn send_entry(
    entry: &mut dyn Read,
    meta: IndexEntry,
    tx: &mpsc::Sender<Item>,
    bad: &dyn Fn(String) -> Error,
) -> Result<bool> {
    let mut hasher = ObjectHasher::for_entry(&meta);
    let sha_mismatch = |h: ObjectHasher, m: &IndexEntry| {
        h.finish()
            .check(m)
            .err()
            .map(|e| format!("object {:?}: {e}", m.key))
    };
    let path = meta.path.clone();
    if meta.size <= PART_SIZE as u64 {
        let mut data = Vec::with_capacity(meta.size as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("entry {path:?}: {e}")))?;
        hasher.update(&data);
        if let Some(m) = sha_mismatch(hasher, &meta) {
            return Err(bad(m));
        }
        let item = Item {
            meta,
            body: Body::Full(Bytes::from(data)),
        };
        return Ok(tx.blocking_send(item).is_ok());
    }
    let (ctx, crx) = mpsc::channel(4);
    let m = meta.clone();
    let item = Item {
        meta,
        body: Body::Stream(crx),
    };
    if tx.blocking_send(item).is_err() {
        return Ok(false);
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                // The upload must see the failure and abort, not just the end of the chunks.
                let msg = format!("entry {path:?}: {e}");
                let _ = ctx.blocking_send(Err(std::io::Error::other(msg.clone())));
                return Err(bad(msg));
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if ctx
            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
            .is_err()
        {
            return Ok(false);
        }
    }
    if let Some(msg) = sha_mismatch(hasher, &m) {
        // The multipart upload sees the error and aborts: no damaged object is completed.
        let _ = ctx.blocking_send(Err(std::io::Error::other(msg.clone())));
        return Err(bad(msg));
    }
    Ok(true)
}

/// Reads every restored object back and compares its sum with the index.
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
    let entries = parse_index(&text).map_err(|p| Error::verification(index.display(), p))?;
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
        set.spawn(async move { read_back(&c, &b, &m).await });
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
        Some(Err(e)) => Err(Error::step("verifying", e)),
    }
}
