//! Uploads into an S3 bucket: one PutObject for a small object, a multipart upload for a large one
//! (aborted on any error, so no partial object is left under its key), each with the content type,
//! content headers and user metadata its index entry recorded; and the read-back that proves what
//! landed.
//!
//! Bodies are not signed (`UNSIGNED-PAYLOAD`): they carry a Content-MD5 instead, which every
//! S3-compatible server checks before storing (a body changed on the way is refused with
//! `BadDigest`). SigV4's payload signature is a SHA-256 of every byte through the SDK's `sha2`,
//! 118 MB/s on a CPU without SHA extensions: a third of a restore's CPU, where MD5 runs at about
//! 550 MB/s (docs/PERFORMANCE.md).

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::{s3_error, with_key};
use crate::archive::{IndexEntry, ObjectHasher};
use crate::error::{Error, Problem, ReadBack, Result, S3ErrorKind};

/// Objects above this size are uploaded with a multipart upload.
pub const PART_SIZE: usize = 8 << 20;

/// S3 allows 10,000 parts; a margin keeps a size that grew meanwhile inside the limit.
const MAX_PARTS: u64 = 9_000;

/// The part size of a multipart upload of `object_size` bytes: 8 MiB, or more (whole MiB) for an
/// object that 9,000 parts of 8 MiB would not hold (S3 allows 10,000 parts, 5 TiB objects).
pub fn part_size(object_size: u64) -> usize {
    let needed = object_size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
    needed.max(PART_SIZE as u64) as usize
}

/// True when `key` exists in `bucket`.
pub async fn exists(client: &Client, bucket: &str, key: &str) -> Result<bool> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let err = with_key(s3_error("HeadObject", bucket, e), key);
            if err.kind == S3ErrorKind::NoSuchKey {
                Ok(false)
            } else {
                Err(err.into())
            }
        }
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

/// The Content-MD5 header's value for `body`.
fn content_md5(body: &[u8]) -> String {
    use base64::Engine as _;
    use md5::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// One PutObject. Returns false when the object was skipped because it exists.
pub async fn put_small(
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
        .content_md5(content_md5(&body))
        .body(ByteStream::from(body));
    with_headers!(req, m)
        .customize()
        .disable_payload_signing()
        .send()
        .await
        .map_err(|e| with_key(s3_error("PutObject", bucket, e), &m.key))?;
    Ok(true)
}

/// A multipart upload fed by `chunks`. Returns false when the object was skipped because it
/// exists.
pub async fn put_large(
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
        .map_err(|e| with_key(s3_error("CreateMultipartUpload", bucket, e), &m.key))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let result = upload_parts(client, bucket, m, &upload_id, &mut chunks).await;
    if result.is_err() {
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(&m.key)
            .upload_id(&upload_id)
            .send()
            .await;
    }
    result.map(|()| true)
}

async fn upload_parts(
    client: &Client,
    bucket: &str,
    m: &IndexEntry,
    upload_id: &str,
    chunks: &mut mpsc::Receiver<std::io::Result<Bytes>>,
) -> Result<()> {
    let part = part_size(m.size);
    let mut parts = Vec::new();
    let mut buf = BytesMut::with_capacity(part);
    let mut done = false;
    let mut received = 0u64;
    while !done {
        match chunks.recv().await {
            Some(Ok(c)) => {
                received += c.len() as u64;
                buf.extend_from_slice(&c);
            }
            Some(Err(e)) => {
                return Err(Error::step(
                    format!("reading object {:?} from the archive", m.key),
                    e,
                ))
            }
            // The reader ended: only a whole object may be completed under its key.
            None if received != m.size => {
                return Err(Error::step(
                    format!("reading object {:?} from the archive", m.key),
                    format!("the archive gave {received} of its {} bytes", m.size),
                ))
            }
            None => done = true,
        }
        if buf.len() >= part || (done && (!buf.is_empty() || parts.is_empty())) {
            let n = parts.len() as i32 + 1;
            let body = buf.split().freeze();
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(&m.key)
                .upload_id(upload_id)
                .part_number(n)
                .content_md5(content_md5(&body))
                .body(ByteStream::from(body))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| with_key(s3_error("UploadPart", bucket, e), &m.key))?;
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
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .map_err(|e| with_key(s3_error("CompleteMultipartUpload", bucket, e), &m.key))?;
    Ok(())
}

/// Reads an object back and compares its sum (BLAKE3, or SHA-256 for older indexes) with the index
/// entry.
pub async fn read_back(client: &Client, bucket: &str, m: &IndexEntry) -> Result<()> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(&m.key)
        .send()
        .await
        .map_err(|e| with_key(s3_error("GetObject", bucket, e), &m.key))?;
    let mut body = out.body;
    let mut h = ObjectHasher::for_entry(m);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::step(format!("reading back {:?}", m.key), e))?;
        h.update(&chunk);
    }
    if let Err(e) = h.finish().check(m) {
        return Err(Error::verification(
            format!("bucket {bucket}"),
            Problem::ReadBack(Box::new(ReadBack {
                key: m.key.clone(),
                bucket: bucket.to_string(),
                algorithm: e.algorithm,
                actual: e.actual,
                recorded: e.recorded,
            })),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_within_s3s_limits() {
        assert_eq!(part_size(0), PART_SIZE);
        assert_eq!(part_size(70 << 30), PART_SIZE);
        for size in [80u64 << 30, 1 << 40, 5 << 40] {
            let p = part_size(size) as u64;
            assert!(size.div_ceil(p) <= 10_000, "{size}");
            assert_eq!(p % (1 << 20), 0);
        }
    }
}
