//! A bucket, through the S3 API, as a tar stream with an object index (format: [`crate::archive`]).
//!
//! Data flow: the listing (pages of 1,000 keys) feeds up to `concurrency` fetch tasks; small objects
//! (<= [`SMALL_OBJECT`]) are fetched whole by their task, larger ones are fetched when their turn
//! comes and streamed chunk by chunk. Results are consumed in listing order and handed over a
//! bounded channel to a blocking thread that owns the tar builder and the compressor, hashes each
//! object, and writes the index. Memory is bounded by `concurrency × SMALL_OBJECT` plus a few
//! chunks, whatever the bucket's size. The archive is finished only on an explicit `Finish`: any
//! error or cancellation drops the writer and its temp files are removed.

use std::collections::VecDeque;
use std::io::{self, BufWriter, Read, Write};

use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::archive::{IndexEntry, ObjectHasher, PathPlanner, INDEX_ENTRY};
use crate::crypt::{Identities, Recipients, SealWriter};
use crate::error::{Error, Result, S3Error, S3ErrorKind};
use crate::pipeline::HashWriter;
use crate::s3::{s3_error, with_key};
use crate::sink::local::{ArtifactWriter, TempArtifact};

/// Objects up to this size are fetched whole, concurrently; larger ones are streamed in order.
pub const SMALL_OBJECT: i64 = 1 << 20;

/// What a bucket backup produced.
#[derive(Debug)]
pub struct BucketSummary {
    pub objects: u64,
    pub bytes: u64,
    /// Keys listed but deleted before they could be fetched.
    pub skipped: Vec<String>,
    pub index_sha256: String,
    /// The index file's SHA-256 as stored, when it is sealed (ciphertext).
    pub index_stored_sha256: Option<String>,
}

enum Body {
    Full(Bytes),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

struct Fetched {
    meta: IndexEntry,
    mtime: u64,
    body: Body,
}

enum Msg {
    Object(Box<Fetched>),
    Finish,
}

enum Fetch {
    Ready(Box<Fetched>),
    Large(String),
    Gone(String),
}

/// Where a bucket's archive and object index go.
pub struct Outputs {
    pub archive: ArtifactWriter,
    pub index: TempArtifact,
    /// Set: the index file is sealed to these keys, like the archive.
    pub recipients: Option<std::sync::Arc<Recipients>>,
}

/// Backs up `bucket` (keys under `prefix`) into the archive, writing the index beside it.
pub async fn backup_bucket(
    client: &Client,
    bucket: &str,
    prefix: Option<&str>,
    concurrency: usize,
    out: Outputs,
    progress: &crate::progress::Progress,
) -> Result<(BucketSummary, ArtifactWriter, TempArtifact)> {
    let (tx, rx) = mpsc::channel::<Msg>(concurrency.max(2));
    let writer = tokio::task::spawn_blocking(move || write_archive(rx, out));

    let fed = feed(client, bucket, prefix, concurrency, &tx, progress).await;
    let finish_sent = match &fed {
        Ok(_) => tx.send(Msg::Finish).await.is_ok(),
        Err(_) => false,
    };
    drop(tx);
    let written = writer.await.map_err(|e| Error::Step {
        what: format!("writing the archive of bucket {bucket}"),
        detail: e.to_string(),
    })?;
    // The writer's own error (disk full) explains a failed send better than the send does.
    let (archive, index, stats) = match (fed, written) {
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e),
        (Ok(_), Ok(_)) if !finish_sent => {
            return Err(Error::Step {
                what: format!("writing the archive of bucket {bucket}"),
                detail: "the archive writer stopped early".into(),
            })
        }
        (Ok(skipped), Ok((a, i, s))) => (a, i, WriterStats { skipped, ..s }),
    };
    Ok((
        BucketSummary {
            objects: stats.objects,
            bytes: stats.bytes,
            skipped: stats.skipped,
            index_sha256: stats.index_sha256,
            index_stored_sha256: stats.index_stored_sha256,
        },
        archive,
        index,
    ))
}

/// Lists and fetches, sending objects to the writer in listing order. Returns the skipped keys.
async fn feed(
    client: &Client,
    bucket: &str,
    prefix: Option<&str>,
    concurrency: usize,
    tx: &mpsc::Sender<Msg>,
    progress: &crate::progress::Progress,
) -> Result<Vec<String>> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .set_prefix(prefix.map(String::from))
        .into_paginator()
        .send();
    let mut listed: VecDeque<(String, i64)> = VecDeque::new();
    let mut listing_done = false;
    let mut queue: VecDeque<tokio::task::JoinHandle<Result<Fetch>>> = VecDeque::new();
    let mut skipped = Vec::new();
    loop {
        while queue.len() < concurrency {
            if listed.is_empty() && !listing_done {
                match pages.next().await {
                    Some(Ok(page)) => {
                        for o in page.contents() {
                            if let Some(k) = o.key() {
                                listed.push_back((k.to_string(), o.size().unwrap_or(0)));
                            }
                        }
                    }
                    Some(Err(e)) => return Err(s3_error("ListObjectsV2", bucket, e).into()),
                    None => listing_done = true,
                }
                continue;
            }
            let Some((key, size)) = listed.pop_front() else {
                break;
            };
            let task = if size > SMALL_OBJECT {
                tokio::spawn(async move { Ok(Fetch::Large(key)) })
            } else {
                let (c, b) = (client.clone(), bucket.to_string());
                tokio::spawn(async move { fetch(&c, &b, key, true).await })
            };
            queue.push_back(task);
        }
        let Some(next) = queue.pop_front() else {
            break;
        };
        let fetched = next.await.map_err(|e| Error::Step {
            what: format!("fetching from bucket {bucket}"),
            detail: e.to_string(),
        })??;
        let fetched = match fetched {
            Fetch::Large(key) => fetch(client, bucket, key, false).await?,
            other => other,
        };
        match fetched {
            Fetch::Ready(f) => {
                progress.add_object();
                progress.add_bytes(f.meta.size);
                if tx.send(Msg::Object(f)).await.is_err() {
                    // The writer stopped; its error is reported by the caller.
                    return Ok(skipped);
                }
            }
            Fetch::Gone(key) => {
                tracing::warn!(bucket, key = %key, "object deleted between listing and fetching: skipped");
                skipped.push(key);
            }
            Fetch::Large(_) => unreachable!("large objects are fetched above"),
        }
    }
    Ok(skipped)
}

/// Attempts at one object's body. The SDK retries a GET only until the response's head arrives;
/// a connection that breaks in the body is retried here, so one dropped connection does not fail
/// the bucket.
const BODY_ATTEMPTS: u32 = 4;

/// The pause before body attempt `attempt + 1`: 250 ms, 500 ms, 1 s.
fn backoff(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(250 << attempt.saturating_sub(1).min(4))
}

/// GETs one object: whole (`whole`), or as a stream pumped by its own task.
async fn fetch(client: &Client, bucket: &str, key: String, whole: bool) -> Result<Fetch> {
    let mut attempt = 1;
    loop {
        let out = match client.get_object().bucket(bucket).key(&key).send().await {
            Ok(o) => o,
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Ok(Fetch::Gone(key));
                }
                return Err(with_key(s3_error("GetObject", bucket, e), &key).into());
            }
        };
        let (mut meta, mtime) = object_meta(&key, &out);
        if !whole {
            let resume = Resume {
                client: client.clone(),
                bucket: bucket.to_string(),
                key: key.clone(),
                etag: meta.etag.clone(),
                size: meta.size,
            };
            let (tx, rx) = mpsc::channel(8);
            tokio::spawn(pump(resume, out.body, tx));
            return Ok(Fetch::Ready(Box::new(Fetched {
                meta,
                mtime,
                body: Body::Stream(rx),
            })));
        }
        match out.body.collect().await {
            Ok(bytes) => {
                let bytes = bytes.into_bytes();
                meta.size = bytes.len() as u64;
                return Ok(Fetch::Ready(Box::new(Fetched {
                    meta,
                    mtime,
                    body: Body::Full(bytes),
                })));
            }
            Err(e) if attempt < BODY_ATTEMPTS => {
                tracing::warn!(bucket, key = %key, attempt, "the object's body was cut short ({}): trying again", source_chain(&e));
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(body_cut(bucket, &key, &e, attempt, None).into()),
        }
    }
}

/// The index entry an object's GET response describes, and its mtime for the tar header.
fn object_meta(
    key: &str,
    out: &aws_sdk_s3::operation::get_object::GetObjectOutput,
) -> (IndexEntry, u64) {
    let meta = IndexEntry {
        key: key.to_string(),
        path: String::new(),
        size: out.content_length().unwrap_or(0).max(0) as u64,
        etag: out.e_tag().map(String::from),
        last_modified: out
            .last_modified()
            .and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()),
        content_type: out.content_type().map(String::from),
        content_encoding: out.content_encoding().map(String::from),
        content_disposition: out.content_disposition().map(String::from),
        content_language: out.content_language().map(String::from),
        cache_control: out.cache_control().map(String::from),
        metadata: out
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        sha256: String::new(),
        blake3: None,
    };
    let mtime = out
        .last_modified()
        .map(|t| t.secs().max(0) as u64)
        .unwrap_or(0);
    (meta, mtime)
}

/// What a streamed object needs to pick up where a broken connection left it.
struct Resume {
    client: Client,
    bucket: String,
    key: String,
    /// The version being read: a resumed GET must return the same one (If-Match), never splice
    /// two versions of an object into one archive entry.
    etag: Option<String>,
    size: u64,
}

/// Pumps a large object's body into `tx`; when the connection breaks, GETs the rest (a Range
/// from the bytes already sent, If-Match the same ETag), up to [`BODY_ATTEMPTS`] times.
async fn pump(
    r: Resume,
    mut body: aws_sdk_s3::primitives::ByteStream,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut sent = 0u64;
    let mut attempt = 1;
    loop {
        let err = match body.next().await {
            None => return,
            Some(Ok(b)) => {
                sent += b.len() as u64;
                if tx.send(Ok(b)).await.is_err() {
                    return;
                }
                continue;
            }
            Some(Err(e)) => e,
        };
        if attempt >= BODY_ATTEMPTS || r.etag.is_none() || sent >= r.size {
            let e = body_cut(&r.bucket, &r.key, &err, attempt, Some((sent, r.size)));
            let _ = tx.send(Err(io::Error::other(e))).await;
            return;
        }
        tracing::warn!(bucket = %r.bucket, key = %r.key, attempt, sent, "the object's body was cut short ({}): resuming", source_chain(&err));
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
        match resume(&r, sent).await {
            Ok(rest) => body = rest,
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
        }
    }
}

/// GETs the object from byte `from` on, refusing an answer that is not that exact range.
async fn resume(
    r: &Resume,
    from: u64,
) -> std::result::Result<aws_sdk_s3::primitives::ByteStream, S3Error> {
    let out = r
        .client
        .get_object()
        .bucket(&r.bucket)
        .key(&r.key)
        .range(format!("bytes={from}-"))
        .set_if_match(r.etag.clone())
        .send()
        .await
        .map_err(|e| with_key(s3_error("GetObject", &r.bucket, e), &r.key))?;
    let expected = format!("bytes {from}-{}/{}", r.size - 1, r.size);
    if out.content_range() != Some(expected.as_str()) {
        return Err(S3Error {
            op: "GetObject",
            bucket: r.bucket.clone(),
            key: Some(r.key.clone()),
            kind: S3ErrorKind::Interrupted,
            code: None,
            status: None,
            detail: format!(
                "resuming after a broken connection: asked for {expected:?}, got {:?}",
                out.content_range().unwrap_or("the whole object")
            ),
        });
    }
    Ok(out.body)
}

/// A body that could not be read to its end, however many times it was tried.
fn body_cut(
    bucket: &str,
    key: &str,
    err: &(dyn std::error::Error + 'static),
    attempts: u32,
    progress: Option<(u64, u64)>,
) -> S3Error {
    let at = progress.map_or(String::new(), |(got, size)| {
        format!(" after {got} of {size} bytes")
    });
    S3Error {
        op: "GetObject",
        bucket: bucket.to_string(),
        key: Some(key.to_string()),
        kind: S3ErrorKind::Interrupted,
        code: None,
        status: None,
        detail: format!(
            "incomplete body: the connection closed{at} ({attempts} attempts): {}",
            source_chain(err)
        ),
    }
}

/// An error and its causes, `outer: inner: ...`, each said once.
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = Some(err);
    while let Some(e) = src {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = e.source();
    }
    parts.join(": ")
}

#[derive(Debug, Default)]
struct WriterStats {
    objects: u64,
    bytes: u64,
    skipped: Vec<String>,
    index_sha256: String,
    index_stored_sha256: Option<String>,
}

/// Reads a body, failing unless it holds exactly `size` bytes.
struct ExactReader {
    body: Body,
    chunk: Bytes,
    remaining: u64,
    key: String,
}

impl ExactReader {
    fn refill(&mut self) -> io::Result<bool> {
        loop {
            if !self.chunk.is_empty() {
                return Ok(true);
            }
            match &mut self.body {
                Body::Full(b) => {
                    if b.is_empty() {
                        return Ok(false);
                    }
                    self.chunk = std::mem::take(b);
                }
                Body::Stream(rx) => match rx.blocking_recv() {
                    None => return Ok(false),
                    Some(Ok(b)) => self.chunk = b,
                    Some(Err(e)) => return Err(e),
                },
            }
        }
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            if self.refill()? {
                return Err(io::Error::other(format!(
                    "object {:?} has more bytes than its Content-Length",
                    self.key
                )));
            }
            return Ok(0);
        }
        if !self.refill()? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("object {:?} ended {} bytes early", self.key, self.remaining),
            ));
        }
        let n = buf.len().min(self.chunk.len()).min(self.remaining as usize);
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Sorts an error from appending an object: OS errors come from the archive file (disk full), a
/// typed S3 error from the body's fetch task, the rest from the body's length checks.
fn body_or_disk(e: io::Error, key: &str, io_err: &impl Fn(io::Error) -> Error) -> Error {
    if e.raw_os_error().is_some() {
        return io_err(e);
    }
    if e.get_ref().is_some_and(|inner| inner.is::<S3Error>()) {
        let inner = e.into_inner().expect("checked above");
        return match inner.downcast::<S3Error>() {
            Ok(s3) => Error::S3(s3),
            Err(other) => Error::step(format!("fetching object {key:?}"), other.to_string()),
        };
    }
    Error::Step {
        what: format!("fetching object {key:?}"),
        detail: e.to_string(),
    }
}

/// Counts an object's bytes and takes both of its index sums as tar reads it.
struct ObjectReader<R> {
    inner: R,
    sums: ObjectHasher,
    bytes: u64,
}

impl<R: Read> Read for ObjectReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sums.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// The blocking side: tar + compression + per-object hashing + index.
fn write_archive(
    mut rx: mpsc::Receiver<Msg>,
    out: Outputs,
) -> Result<(ArtifactWriter, TempArtifact, WriterStats)> {
    let Outputs {
        mut archive,
        mut index,
        recipients,
    } = out;
    let archive_path = archive.temp_path().to_path_buf();
    let index_path = index.temp_path().to_path_buf();
    let io_err = |e: io::Error| Error::io("cannot write", &archive_path, e);
    let index_file = index
        .writer()
        .try_clone()
        .map_err(|e| Error::io("cannot reopen", &index_path, e))?;
    let (mut index_w, scratch) = IndexWriter::new(index_file, recipients.as_deref())
        .map_err(|e| Error::io("cannot start writing", &index_path, e))?;
    let mut stats = WriterStats::default();
    let mut planner = PathPlanner::default();
    {
        let mut tar = tar::Builder::new(archive.sink());
        loop {
            let msg = rx.blocking_recv().ok_or_else(|| Error::Step {
                what: "writing the archive".into(),
                detail: "aborted before the listing finished".into(),
            })?;
            let f = match msg {
                Msg::Finish => break,
                Msg::Object(f) => f,
            };
            let Fetched {
                mut meta,
                mtime,
                body,
            } = *f;
            meta.path = planner.path_for(&meta.key);
            let mut reader = ObjectReader {
                inner: ExactReader {
                    body,
                    chunk: Bytes::new(),
                    remaining: meta.size,
                    key: meta.key.clone(),
                },
                sums: ObjectHasher::both(),
                bytes: 0,
            };
            let mut h = header(meta.size, mtime);
            tar.append_data(&mut h, &meta.path, &mut reader)
                .map_err(|e| body_or_disk(e, &meta.key, &io_err))?;
            // tar stops reading at the header's size: make sure nothing was left behind.
            let mut probe = [0u8; 1];
            reader.read(&mut probe).map_err(|e| Error::Step {
                what: format!("fetching object {:?}", meta.key),
                detail: e.to_string(),
            })?;
            let (n, sums) = (reader.bytes, reader.sums.finish());
            (meta.sha256, meta.blake3) = (sums.sha256.unwrap_or_default(), sums.blake3);
            stats.objects += 1;
            stats.bytes += n;
            serde_json::to_writer(&mut index_w, &meta)
                .map_err(|e| Error::io("cannot write", &index_path, e.into()))?;
            index_w
                .write_all(b"\n")
                .map_err(|e| Error::io("cannot write", &index_path, e))?;
        }
        (stats.index_sha256, stats.index_stored_sha256) = append_index(
            &mut tar,
            index_w,
            scratch.as_ref(),
            &index_path,
            &archive_path,
        )?;
    }
    Ok((archive, index, stats))
}

/// Ends the archive with the object index as its last entry; returns the index's SHA-256.
fn append_index(
    tar: &mut tar::Builder<&mut dyn Write>,
    index_w: IndexWriter,
    scratch: Option<&Identities>,
    index_path: &std::path::Path,
    archive_path: &std::path::Path,
) -> Result<(String, Option<String>)> {
    let (index_bytes, index_sha, stored_sha) = index_w
        .finish()
        .map_err(|e| Error::io("cannot write", index_path, e))?;
    let mut h = header(
        index_bytes,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let f =
        std::fs::File::open(index_path).map_err(|e| Error::io("cannot reopen", index_path, e))?;
    let io_err = |e: io::Error| Error::io("cannot write", archive_path, e);
    match scratch {
        None => tar.append_data(&mut h, INDEX_ENTRY, f).map_err(io_err)?,
        Some(ids) => {
            // Read back through the seal with the run's scratch key: the plain index never
            // touches the disk.
            let plain = crate::crypt::unseal(f, ids)
                .map_err(|e| Error::step("reading back the sealed object index", e))?;
            tar.append_data(&mut h, INDEX_ENTRY, plain)
                .map_err(io_err)?
        }
    }
    tar.finish().map_err(io_err)?;
    Ok((index_sha, scratch.map(|_| stored_sha)))
}

/// The object index file: plain content hashed, optionally sealed, stored bytes hashed.
struct IndexWriter(HashWriter<SealWriter<HashWriter<BufWriter<std::fs::File>>>>);

impl IndexWriter {
    /// A writer of the index into `file`. When sealed, the file is also sealed to a scratch key
    /// returned here (and dropped after the run), so the index can be read back into the archive.
    fn new(
        file: std::fs::File,
        recipients: Option<&Recipients>,
    ) -> io::Result<(IndexWriter, Option<Identities>)> {
        let stored = HashWriter::new(BufWriter::new(file));
        let (sealed, scratch) = match recipients {
            None => (SealWriter::Plain(stored), None),
            Some(r) => {
                let (w, ids) = r.seal_with_scratch_key(stored)?;
                (SealWriter::Age(w), Some(ids))
            }
        };
        Ok((IndexWriter(HashWriter::new(sealed)), scratch))
    }

    /// Plain bytes, plain SHA-256, stored SHA-256.
    fn finish(self) -> io::Result<(u64, String, String)> {
        let (sealed, n, plain_sha) = self.0.finish();
        let (buf, _, stored_sha) = sealed.finish()?.finish();
        buf.into_inner().map_err(|e| e.into_error())?;
        Ok((n, plain_sha, stored_sha))
    }
}

impl Write for IndexWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
