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
use std::io;

use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::archive::IndexEntry;
use crate::crypt::Recipients;
use crate::error::{Error, Result, S3Error, S3ErrorKind};
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

mod write;
use write::{write_archive, WriterStats};
